"""Significance between systems and confidence intervals, through sacrebleu's paired tests."""
import random

import numpy as np
import pytest

from sonar_t5.data.synthetic import make_sentence
from sonar_t5.evaluation.significance import confidence_intervals, paired_tests

from .conftest import assert_user_error, run_script

_rng = np.random.default_rng(0)
REFERENCES = [make_sentence(_rng) for _ in range(400)]  # the demo's instructional sentences


def damaged(sentences, every, seed):
    """Each `every`-th sentence with its second half replaced by other words."""
    words = random.Random(seed)
    out = []
    for n, sentence in enumerate(sentences):
        w = sentence.split()
        if n % every == 0:
            w[len(w) // 2:] = words.sample(["the", "a", "paper", "glue", "now", "we"],
                                           k=len(w) - len(w) // 2) if len(w) < 8 else ["ok"]
        out.append(" ".join(w))
    return out


def test_identical_systems_give_p_1_and_a_clearly_better_one_p_below_005():
    weak, strong = damaged(REFERENCES[:200], 2, 1), damaged(REFERENCES[:200], 10, 2)
    rows = paired_tests([("weak", weak), ("strong", strong), ("same", list(weak))],
                        REFERENCES[:200], n_samples=300)
    for label in ("BLEU", "chrF"):
        base, better, same = rows[label]
        assert base["p_bootstrap"] is None and better["score"] > base["score"] + 5
        assert better["p_bootstrap"] < 0.05 and better["p_randomisation"] < 0.05
        assert same["p_bootstrap"] == same["p_randomisation"] == 1.0


def test_the_interval_contains_the_score_and_narrows_with_more_sentences():
    system = damaged(REFERENCES, 3, 3)
    few = confidence_intervals(system[:50], REFERENCES[:50], n_samples=300)
    many = confidence_intervals(system, REFERENCES, n_samples=300)
    for metric, score in (("bleu", rows_score(system[:50], "BLEU")),
                          ("chrf", rows_score(system[:50], "chrF"))):
        low, high = few[metric]
        assert low <= score <= high
        assert many[metric][1] - many[metric][0] < high - low


def rows_score(system, label):
    return paired_tests([("s", system)], REFERENCES[:len(system)], n_samples=10)[label][0]["score"]


def write_outputs(path, ids, references, hypotheses):
    path.mkdir(parents=True)
    (path / "translations.txt").write_text("id\treference\ttranslation\n" + "".join(
        f"{i}\t{r}\t{h}\n" for i, r, h in zip(ids, references, hypotheses)))
    return path


def test_the_command_compares_systems_and_refuses_different_splits(tmp_path):
    refs = REFERENCES[:60]
    ids = [f"s{n}" for n in range(60)]
    base = write_outputs(tmp_path / "base", ids, refs, damaged(refs, 2, 4))
    other = write_outputs(tmp_path / "other", ids, refs, damaged(refs, 20, 5))
    result = run_script("-m", "sonar_t5.evaluation.significance", base, other, "--n_samples", 200,
                        check=True)
    assert "BLEU (95% interval from 200 bootstrap resamples" in result.stdout
    assert f"{other}" in result.stdout and "p = " in result.stdout
    shorter = write_outputs(tmp_path / "shorter", ids[:50], refs[:50], refs[:50])
    assert_user_error(run_script("-m", "sonar_t5.evaluation.significance", base, shorter),
                      "scored 50 sentences", "60")
    moved = write_outputs(tmp_path / "moved", ids[1:] + ids[:1], refs[1:] + refs[:1], refs)
    assert_user_error(run_script("-m", "sonar_t5.evaluation.significance", base, moved),
                      "differ at sentence 1", "same split")
    assert_user_error(run_script("-m", "sonar_t5.evaluation.significance", base, tmp_path / "none"),
                      "no translations.txt")


@pytest.mark.parametrize("flags, fragment", [([], "give a baseline and at least one"),
                                             (["--n_samples", "3"], "at least 10")])
def test_bad_flags_are_one_line(tmp_path, flags, fragment):
    base = write_outputs(tmp_path / "base", ["a"], ["x y"], ["x y"])
    extra = [] if not flags else [base]
    assert_user_error(run_script("-m", "sonar_t5.evaluation.significance", base, *extra, *flags),
                      fragment)


def test_equal_scores_from_different_outputs_are_not_significant():
    refs = REFERENCES[:40]
    nothing_right = [["zzz"] * 40, ["qqq qqq"] * 40]  # BLEU 0.00 both, different outputs
    rows = paired_tests([("a", nothing_right[0]), ("b", nothing_right[1])], refs, n_samples=100)
    base, other = rows["BLEU"]
    assert base["score"] == other["score"] == 0.0
    assert other["p_bootstrap"] == other["p_randomisation"] == 1.0


def test_translations_files_the_command_cannot_read_are_one_line(tmp_path):
    good = write_outputs(tmp_path / "good", ["a", "b"], ["x y", "z"], ["x y", "z"])
    for name, content, fragment in [
            ("empty", b"", "no translations in the file (empty, or a header line alone)"),
            ("header", b"id\treference\ttranslation\n", "no translations in the file"),
            ("latin1", "id\treference\ttranslation\na\tcaf\xe9\tx\n".encode("latin-1"),
             "not UTF-8 text (invalid continuation byte at byte 30)")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "translations.txt").write_bytes(content)
        for pair in ([tmp_path / name, tmp_path / name], [good, tmp_path / name]):
            assert_user_error(run_script("-m", "sonar_t5.evaluation.significance", *pair), fragment,
                              str(tmp_path / name / "translations.txt"))


def test_a_reference_holding_line_separators_reads_back_whole(tmp_path):
    refs = ["a line\u2028separator inside", "next\x85line", "form\x0cfeed and\x1cfile sep"]
    base = write_outputs(tmp_path / "base", ["a", "b", "c"], refs, refs)
    other = write_outputs(tmp_path / "other", ["a", "b", "c"], refs, ["x", "y", "z"])
    result = run_script("-m", "sonar_t5.evaluation.significance", base, other, "--n_samples", 20,
                        check=True)
    assert "p = " in result.stdout
