"""The field's metrics, checked against independent computations: sacrebleu's own command line
on the written files (both BLEU conventions, BLEU-1..4, chrF) and rouge-score called
directly."""
import json
import math
import subprocess
import sys

import pytest
from rouge_score import rouge_scorer

from sonar_t5.evaluation.metrics import translation_metrics

from .conftest import run_script

REFERENCES = ["i'm going to show you how to fold the paper carefully",
              "now we are going to cut the thin edges, slowly.",
              "hello, world .", "put the glue on the left side", "that's it for today"]
HYPOTHESES = ["i'm going to show you how to fold paper", "now we cut the thin edges slowly.",
              "hello, world.", "put glue on the side", "that is it for today"]
RAW = ["-tok", "none", "-s", "floor", "-sv", "0", "--force"]  # Uni-Sign's raw_corpus_bleu


def sacrebleu_cli(hypotheses, references, tmp_path, *flags):
    """sacrebleu's command line on two files -> its JSON (BLEU, or chrF with -m chrf)."""
    (tmp_path / "hyp.txt").write_text("\n".join(hypotheses) + "\n")
    (tmp_path / "ref.txt").write_text("\n".join(references) + "\n")
    result = subprocess.run([sys.executable, "-m", "sacrebleu", str(tmp_path / "ref.txt"), "-i",
                             str(tmp_path / "hyp.txt"), "--format", "json", "-w", "6", *flags],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def cumulative_bleu(cli, order):
    """BLEU-n from the command line's own n-gram precisions and brevity penalty."""
    precisions = [float(p) for p in cli["verbose_score"].split()[0].split("/")][:order]
    bp = float(cli["verbose_score"].split("BP = ")[1].split()[0])
    return bp * math.exp(sum(math.log(p) for p in precisions) / order)


@pytest.mark.parametrize("prefix, flags", [("bleu", []), ("raw_bleu", RAW)],
                         ids=["ssvp_slt", "uni_sign"])
def test_bleu_1_to_4_equal_sacrebleus_command_line(prefix, flags, tmp_path):
    ours = translation_metrics(HYPOTHESES, REFERENCES)
    cli = sacrebleu_cli(HYPOTHESES, REFERENCES, tmp_path, *flags)
    four = "bleu" if prefix == "bleu" else "raw_bleu4"
    assert ours[four] == pytest.approx(cli["score"], abs=1e-4)
    # the command line has no effective order (Uni-Sign's raw BLEU uses it): the rest agrees
    assert ours[f"{four}_signature"].replace("eff:yes", "eff:no") == cli["signature"]
    for order in (1, 2, 3):  # the command line prints its precisions to one decimal
        assert ours[f"{prefix}{order}"] == pytest.approx(cumulative_bleu(cli, order), rel=2e-3)
    assert ours[f"{prefix}1"] > ours[f"{prefix}2"] > ours[f"{prefix}3"] > 0


def test_chrf_and_rouge_l_equal_the_libraries_called_directly(tmp_path):
    ours = translation_metrics(HYPOTHESES, REFERENCES)
    assert ours["chrf"] == pytest.approx(
        sacrebleu_cli(HYPOTHESES, REFERENCES, tmp_path, "-m", "chrf")["score"], abs=1e-4)
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    f1 = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(HYPOTHESES, REFERENCES)]
    assert ours["rouge_l"] == pytest.approx(100 * sum(f1) / len(f1))
    assert 0 < ours["rouge_l"] < 100


def test_one_sentence_pair_where_the_two_conventions_differ():
    """13a splits punctuation off words, Uni-Sign's raw BLEU does not: a hypothesis that
    writes "world." for the reference's "world ." is perfect under one, not the other."""
    scores = translation_metrics(["hello, world."], ["hello, world ."])
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["raw_bleu4"] == 0.0  # its one bigram does not match: floor 0 makes it 0
    # "hello," matches, "world." does not: 1 of 2 unigrams, brevity penalty for 2 vs 3 words
    assert scores["raw_bleu1"] == pytest.approx(100 * 1 / 2 * math.exp(1 - 3 / 2))


def test_the_validation_summary_equals_the_command_line_on_its_written_file(tiny_run,
                                                                           tiny_data,
                                                                           tmp_path):
    out = tmp_path / "validation"
    run_script("validate_perceiver_model.py", "--checkpoint", tiny_run[0] / "best_model.pt",
               "--features", tiny_data / "features" / "val", "--manifest",
               tiny_data / "manifests" / "val.tsv", "--output", out, check=True)
    summary = json.loads((out / "validation_summary.json").read_text())
    rows = [line.split("\t") for line in (out / "translations.txt").read_text().splitlines()[1:]]
    references, hypotheses = [r[1] for r in rows], [r[2] for r in rows]
    assert summary["bleu"] == pytest.approx(
        sacrebleu_cli(hypotheses, references, tmp_path)["score"], abs=1e-4)
    assert summary["raw_bleu4"] == pytest.approx(
        sacrebleu_cli(hypotheses, references, tmp_path, *RAW)["score"], abs=1e-4)
    assert summary["chrf"] == pytest.approx(
        sacrebleu_cli(hypotheses, references, tmp_path, "-m", "chrf")["score"], abs=1e-4)
    for name in ("bleu", "raw_bleu4", "chrf", "rouge_l"):
        assert summary[f"{name}_signature"]


def test_verdicts_place_a_score_against_its_data_and_never_judge_a_thesis(tmp_path):
    from sonar_t5.data.synthetic import make_demo_data
    from sonar_t5.evaluation.metrics import bleu_verdict
    from sonar_t5.evaluation.validate import data_kind
    assert bleu_verdict(0.4, "how2sign")[0] == bleu_verdict(0.4, "demo")[0] == "not learning"
    assert bleu_verdict(80.0, "demo")[0] == "demo data"
    assert [bleu_verdict(b, "how2sign")[0] for b in (5.0, 10.0, 20.0)] == [
        "below the published How2Sign range", "within the published How2Sign range",
        "above the published How2Sign range"]
    assert "8.0-15.5" in bleu_verdict(10.0, "how2sign")[1]
    assert bleu_verdict(20.0, None)[0] == "no reference range"
    for bleu in (0.5, 5.0, 10.0, 20.0, 80.0):
        for data in ("demo", "how2sign", None):
            assert "thesis" not in " ".join(bleu_verdict(bleu, data)).lower()
    # which data a manifest is: the demo's marks itself, How2Sign's by its name or columns
    make_demo_data(tmp_path / "demo", num_train=4, num_val=2, num_test=2)
    assert data_kind(tmp_path / "demo" / "manifests" / "test.tsv") == "demo"
    how2sign = tmp_path / "how2sign_realigned_test.csv"
    how2sign.write_text("VIDEO_ID\tVIDEO_NAME\tSENTENCE_ID\tSENTENCE_NAME\tSTART_REALIGNED\t"
                        "END_REALIGNED\tSENTENCE\n")
    assert data_kind(how2sign) == "how2sign"
    mine = tmp_path / "mine.tsv"
    mine.write_text("id\tsentence\n1\thello\n")
    assert data_kind(mine) is None


def test_a_collapse_in_the_first_epochs_is_a_note_that_says_when_to_worry():
    from sonar_t5.training.engine import EARLY_EPOCHS, report_epoch
    lines = []
    for epoch in (1, EARLY_EPOCHS + 1):
        record = {"epoch": epoch, "train_loss": 5.0, "val_loss": 5.0, "val_bleu": 0.0,
                  "cond_gap": 0.5, "lr": 1e-3, "epoch_time_s": 1.0, "samples_per_s": 10.0,
                  "samples": [], "nonfinite_steps": 0, "step": 10 * epoch,
                  "val_unique_ratio": 0.1,
                  "most_common": "the", "most_common_pct": 90.0}
        report_epoch(record, True, [record], 9, "tokens", lines.append)
    early, late = [line for line in lines if "mode collapse" in line]
    assert early.startswith("  note: mode collapse: 10% of validation outputs are distinct, "
                            "'the' is 90% of them (expected in the first epochs") and f"past epoch {EARLY_EPOCHS}" in early
    assert late == ("  warning: mode collapse: 10% of validation outputs are distinct, 'the' "
                    "is 90% of them")
