"""validate_perceiver_model.py, plot_training_curves.py and the results table."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import sacrebleu

from .conftest import (ROOT, TINY_MODEL, assert_user_error, data_args, run_script,
                       held_out_args)

SUMMARY_KEYS = {"bleu", "bleu_signature", "chrf", "num_samples", "diversity", "lengths",
                "verdict", "generation", "samples_per_s", "cond_gap"}


def validate(run, data, out, *extra, check=True):
    return run_script("validate_perceiver_model.py", "--checkpoint", run / "best_model.pt",
                      "--features", data / "features" / "test", "--manifest",
                      data / "manifests" / "test.tsv", "--output", out, "--device", "cpu",
                      *extra, check=check)


def read_translations(path):
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id\treference\ttranslation"
    return [line.split("\t") for line in lines[1:]]


def test_validation_report_summary_and_bleu(tiny_run, tiny_data, tmp_path):
    run, _ = tiny_run
    result = validate(run, tiny_data, tmp_path / "v", "--num_samples", "4")
    for section in ("BLEU:", "chrF:", "MODE COLLAPSE CHECK", "unique translations",
                    "diversity ratio", "most common:", "distinct-1", "distinct-2",
                    "LENGTH STATISTICS", "SAMPLE TRANSLATIONS (first 4)", "Reference:",
                    "Translation:", "VERDICT", "conditioning gap"):
        assert section in result.stdout, section
    summary = json.loads((tmp_path / "v" / "validation_summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    rows = read_translations(tmp_path / "v" / "translations.txt")
    assert len(rows) == summary["num_samples"] == 24
    refs, hyps = [r[1] for r in rows], [r[2] if len(r) > 2 else "" for r in rows]
    assert summary["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert summary["diversity"]["total"] == 24
    assert "wrote" in result.stdout
    # the demo data: no published range to place the score in, and no judgement of a thesis
    expected = "not learning" if summary["bleu"] < 1 else "demo data"
    assert summary["verdict"] == expected and f"{expected.upper()} - " in result.stdout
    assert "thesis" not in result.stdout.lower()


def test_batched_generation_equals_batch_size_one(tiny_run, tiny_data, tmp_path):
    run, _ = tiny_run
    validate(run, tiny_data, tmp_path / "b16", "--batch_size", "16", "--num_beams", "3")
    validate(run, tiny_data, tmp_path / "b1", "--batch_size", "1", "--num_beams", "3")
    assert (read_translations(tmp_path / "b16" / "translations.txt")
            == read_translations(tmp_path / "b1" / "translations.txt"))


@pytest.mark.parametrize("case", ["missing", "not_a_checkpoint", "truncated", "missing_features"])
def test_validate_errors(tiny_run, tiny_data, tmp_path, case):
    run, _ = tiny_run
    if case == "missing":
        args = ["--checkpoint", tmp_path / "nope.pt"]
        fragment = "checkpoint not found"
    elif case == "not_a_checkpoint":
        (tmp_path / "fake.pt").write_text("hello")
        args = ["--checkpoint", tmp_path / "fake.pt"]
        fragment = "not a readable checkpoint"
    elif case == "truncated":  # what a crash mid-write would leave without the atomic write
        data = (run / "best_model.pt").read_bytes()
        (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
        args = ["--checkpoint", tmp_path / "half.pt"]
        fragment = "not a readable checkpoint (truncated or corrupt"
    else:
        args = ["--checkpoint", run / "best_model.pt"]
        fragment = "24 of 24 feature files are missing"
    features = tmp_path if case == "missing_features" else tiny_data / "features" / "test"
    result = run_script("validate_perceiver_model.py", *args, "--features", features,
                        "--manifest", tiny_data / "manifests" / "test.tsv",
                        "--output", tmp_path / "v")
    assert_user_error(result, fragment)
    assert not (tmp_path / "v").exists()


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_plot_training_curves(tiny_run):
    run, _ = tiny_run
    result = run_script("plot_training_curves.py", "--checkpoint_dir", run, check=True)
    assert png_size(run / "training_curves.png") == (2250, 675)
    assert "best BLEU" in result.stdout and "2 epochs" in result.stdout


@pytest.fixture(scope="module")
def projection_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny_projection"
    run_script("train_sonar_with_t5.py", *data_args(tiny_data), *held_out_args(tiny_data),
               *TINY_MODEL, "--epochs", "1", "--bridge", "projection", "--output_dir", out,
               check=True)
    return out


# The metric columns of the default table.
NUMERIC_HEADERS = {"BLEU", "raw BLEU-4", "chrF", "ROUGE-L", "unique", "cond. gap"}


def test_the_curves_have_units_separate_axes_safe_colours_and_a_vector_format(tiny_run, tmp_path,
                                                                              monkeypatch):
    from sonar_t5.evaluation import report
    run, _ = tiny_run
    figures = []
    monkeypatch.setattr(report, "save_figure", lambda fig, output: figures.append(fig))
    report.plot_run(report.load_history(run), tmp_path / "curves.png")
    (fig,) = figures
    loss, bleu, gap, unique = fig.axes  # the last: the gap panel's twin
    assert loss.get_ylabel() == "cross-entropy (nats/token)"
    assert gap.get_ylabel() == "conditioning gap (nats/token)"
    assert unique.get_ylabel() == "share of distinct translations"
    assert unique.get_ylim() == (0, 1.05) and unique.bbox.bounds == gap.bbox.bounds
    assert fig._suptitle is None  # no title unless asked: a thesis gives a caption
    colours = {line.get_color() for ax in fig.axes for line in ax.get_lines()
               if line.get_color() != "black"}
    assert colours <= set(report.COLOURS)
    # --format pdf: a vector figure beside the PNG
    monkeypatch.undo()  # the script runs in this process: figures are written again
    run_script("plot_training_curves.py", "--checkpoint_dir", run, "--format", "pdf", check=True)
    assert (run / "training_curves.pdf").read_bytes()[:5] == b"%PDF-"


def test_compare_and_results_table(tiny_run, projection_run, tmp_path):
    run, _ = tiny_run
    png = tmp_path / "compare.png"
    result = run_script("plot_training_curves.py", "--compare", run, projection_run,
                        "--output", png, check=True)
    assert png_size(png) == (1800, 675)
    assert "tiny_perceiver:" in result.stdout and "tiny_projection:" in result.stdout
    run_script("plot_training_curves.py", "--table", run, projection_run, "--output",
               tmp_path / "results", check=True)
    markdown = table_lines(tmp_path / "results.md")
    assert markdown[0].startswith("| Run ") and len(markdown) == 4
    header = [c.strip() for c in markdown[0].strip("|").split("|")]
    assert header[:3] == ["Run", "Bridge", "Input"] and "cond. gap" in header
    assert "tiny_perceiver" in markdown[2] and "perceiver" in markdown[2]
    assert "tiny_projection" in markdown[3] and "projection" in markdown[3]
    # numbers right-aligned: Markdown's rule ends each numeric column with a colon
    rule = [c.strip() for c in markdown[1].strip("|").split("|")]
    assert all(r.endswith(":") == (h in ("Latents", "Layers", "n", "Best epoch") or
                                   h in NUMERIC_HEADERS) for h, r in zip(header, rule)), rule
    latex = (tmp_path / "results.tex").read_text()
    for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\begin{tabular}", "\\end{tabular}"):
        assert rule in latex
    assert "tiny\\_perceiver" in latex and "cond. gap" in latex and "cond\\_gap" not in latex
    align = latex.split("\\begin{tabular}{")[1].split("}")[0]
    assert align == "".join("r" if h in NUMERIC_HEADERS or h in ("Latents", "Layers", "n",
                                                                 "Best epoch") else "l"
                            for h in header)
    body = latex.split("\\midrule")[1].split("\\bottomrule")[0]
    assert {"raw BLEU-4", "ROUGE-L"} <= {cell.strip() for cell in markdown[0].split("|")}
    columns = markdown[0].count("|") - 1  # the same columns as the Markdown table
    assert all(row.count("&") == columns - 1 for row in body.strip().split("\\\\")
               if row.strip())


def test_one_checkpoint_scored_two_ways_is_two_table_rows(tiny_run, tiny_data, tmp_path):
    run, _ = tiny_run
    # A relative checkpoint path (the scripts run in the repository root) is stored absolute.
    relative = Path(os.path.relpath(run, ROOT))
    validate(relative, tiny_data, tmp_path / "greedy", "--num_beams", "1", "--num_samples", "0")
    validate(run, tiny_data, tmp_path / "beam", "--num_beams", "3", "--length_penalty", "2",
             "--num_samples", "0")
    run_script("plot_training_curves.py", "--table", tmp_path / "greedy", tmp_path / "beam",
               "--output", tmp_path / "results", check=True)
    lines = table_lines(tmp_path / "results.md")
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
            for line in lines[2:]]
    assert [(r["Decoding"], r["n"]) for r in rows] == [("greedy", "1"), ("beam 3, lp 2.0", "1")]
    for row, name in zip(rows, ("greedy", "beam")):
        summary = json.loads((tmp_path / name / "validation_summary.json").read_text())
        assert float(row["BLEU"]) == pytest.approx(summary["bleu"], abs=0.005)
        assert float(row["chrF"]) == pytest.approx(summary["chrf"], abs=0.05)
        assert summary["checkpoint"] == str(run / "best_model.pt")
    # A summary whose run directory is gone: one line naming the summary.
    summary = json.loads((tmp_path / "beam" / "validation_summary.json").read_text())
    summary["checkpoint"] = str(tmp_path / "moved" / "best_model.pt")
    (tmp_path / "beam" / "validation_summary.json").write_text(json.dumps(summary))
    result = run_script("plot_training_curves.py", "--table", tmp_path / "beam", "--output",
                        tmp_path / "results")
    assert_user_error(result, "has no run directory here",
                      str(tmp_path / "beam" / "validation_summary.json"))


@pytest.fixture(scope="module")
def seed_runs(tiny_run, tmp_path_factory):
    """One experiment, three seeds: tiny_run (seed 42) and the same flags with seeds 1 and 2."""
    run, _ = tiny_run
    root = tmp_path_factory.mktemp("seeds")
    argv = json.loads((run / "config.json").read_text())["args"]
    for seed in (1, 2):
        run_script("train_sonar_with_t5.py", *data_args_of(argv), *TINY_MODEL, "--epochs", "2",
                   "--resampler_input", "tokens", "--seed", seed, "--output_dir",
                   root / f"seed{seed}", check=True)
    return [root / "seed1", root / "seed2", run]


def data_args_of(argv):
    return [x for flag in ("train_features", "train_manifest", "val_features", "val_manifest",
                           "test_features", "test_manifest")
            for x in (f"--{flag}", argv[flag])]


def table_lines(path):
    """A .md table's lines, without the notes after it."""
    return path.read_text().split("\n\n")[0].splitlines()


def test_seed_group_is_one_row_with_mean_and_std(seed_runs, projection_run, tmp_path):
    run_script("plot_training_curves.py", "--table", *seed_runs, projection_run, "--output",
               tmp_path / "results", check=True)
    lines = table_lines(tmp_path / "results.md")
    assert len(lines) == 4  # header, rule, the seed group, the projection run
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    group = dict(zip(header, (c.strip() for c in lines[2].strip("|").split("|"))))
    assert group["Run"] == "seed1, seed2, tiny_perceiver" and group["n"] == "3"
    from sonar_t5.evaluation.table import group_name  # runs named alike: one short name
    assert group_name(["run_seed1", "run_seed2", "run_seed10"]) == "run_seed{1,2,10}"
    bests = [max(json.loads((r / "training_history.json").read_text()),
                 key=lambda e: e["val_bleu"]) for r in seed_runs]
    for column, key, decimals in (("BLEU", "val_bleu", 2), ("chrF", "val_chrf", 1),
                                  ("unique", "val_unique_ratio", 2), ("cond. gap", "cond_gap", 3)):
        values = [b[key] for b in bests]
        mean = sum(values) / 3
        std = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5  # sample std, by hand
        assert group[column] == f"{mean:.{decimals}f} ± {std:.{decimals}f}", column
    other = dict(zip(header, (c.strip() for c in lines[3].strip("|").split("|"))))
    assert other["Run"] == "tiny_projection" and other["n"] == "1"

    png = tmp_path / "compare.png"
    result = run_script("plot_training_curves.py", "--compare", *seed_runs, projection_run,
                        "--output", png, check=True)
    assert png_size(png) == (1800, 675) and "seed2:" in result.stdout


def test_seed_groups_in_compare_are_labelled_with_their_runs(seed_runs, projection_run):
    from sonar_t5.evaluation.report import history_groups
    groups = history_groups([*seed_runs, projection_run])
    assert {label: len(h) for label, h in groups.items()} == {
        "seed1, seed2, tiny_perceiver (mean of 3 seeds)": 3, "tiny_projection": 1}


def test_export_then_validate_gives_the_same_bleu(tiny_run, tiny_data, tmp_path):
    from safetensors import safe_open
    run, _ = tiny_run
    exported = tmp_path / "exported"
    run_script("-m", "sonar_t5.evaluation.export", run / "best_model.pt", exported, check=True)
    assert sorted(p.name for p in exported.iterdir()) == [
        "README.md", "config.json", "generation_config.json", "model.safetensors",
        "spiece.model"]
    with safe_open(exported / "model.safetensors", "pt") as weights:  # tensors only
        assert any(k.startswith("bridge.") for k in weights.keys())
    config = json.loads((exported / "config.json").read_text())
    assert config["model_type"] == "sonar_t5" and config["model_config"]["num_latents"] == 8
    card = (exported / "README.md").read_text()
    best = max(json.loads((run / "training_history.json").read_text()),
               key=lambda e: e["val_bleu"])
    assert f"{best['val_bleu']:.2f}" in card and "nrefs:1\\|case:mixed" in card
    test = json.loads((run / "results" / "test" / "validation_summary.json").read_text())
    low, high = test["confidence_95"]["bleu"]
    assert (f"| test BLEU (24 sentences, beam 4) | {test['bleu']:.2f} [{low:.2f}, {high:.2f}] |"
            in card)
    assert config["scored"]["test"]["bleu"] == test["bleu"]
    summaries = []
    for checkpoint in (run / "best_model.pt", exported):
        out = tmp_path / f"validation_{checkpoint.name}"
        run_script("validate_perceiver_model.py", "--checkpoint", checkpoint, "--features",
                   tiny_data / "features" / "test", "--manifest",
                   tiny_data / "manifests" / "test.tsv", "--output", out, "--device", "cpu",
                   check=True)
        summaries.append(json.loads((out / "validation_summary.json").read_text()))
    for key in ("bleu", "chrf", "val_loss", "cond_gap", "generation"):
        assert summaries[0][key] == summaries[1][key], key
    again = run_script("-m", "sonar_t5.evaluation.export", run / "best_model.pt", exported)
    assert_user_error(again, "already exists and is not empty", str(exported))


@pytest.mark.parametrize("bridge", ["perceiver", "projection"])
def test_the_exported_card_and_decoding_say_what_validation_does(bridge, tiny_run, projection_run,
                                                                 tiny_data, tmp_path):
    from transformers import GenerationConfig
    run = tiny_run[0] if bridge == "perceiver" else projection_run
    exported = tmp_path / f"asl_{bridge}_model"
    run_script("-m", "sonar_t5.evaluation.export", run / "best_model.pt", exported, check=True)
    card = (exported / "README.md").read_text().splitlines()
    rows = {}  # the card's tables: {measure or setting: value}, the last of a repeated name
    for line in card:
        if line.startswith("| ") and not line.startswith("| measure") and \
                not line.startswith("| setting"):
            name, value = (c.strip() for c in line.strip("|").split(" | ", 1))
            rows[name] = value
    config = json.loads((run / "config.json").read_text())
    model = config["model_config"]
    assert card[0] == f"# asl_{bridge}_model"  # the folder's name, not a metric's
    assert (f"python validate_perceiver_model.py --checkpoint asl_{bridge}_model "
            "--features FEATURES_DIR --manifest MANIFEST.tsv --output results") in card
    title, layers, reads = {
        "perceiver": ("Perceiver Resampler", "2 layers", "the encoder's token states"),
        "projection": ("Projection bridge", "1 layer", "the pooled sentence embedding")}[bridge]
    assert rows["bridge"] == f"{title}: 8 prefix tokens, {layers}, width 64, reads {reads}"
    assert f"a {title} turns {reads} into 8 prefix tokens" in card[2]
    feature_dim = config["data"]["feature_dim"]
    assert rows["input"] == f"{feature_dim}-d feature sequences, at most " \
                            f"{model['max_frames'] or 'all'} frames"
    best = max(json.loads((run / "training_history.json").read_text()),
               key=lambda e: e["val_bleu"])
    assert rows["validation BLEU"].startswith(f"{best['val_bleu']:.2f} (nrefs:1")
    assert rows["conditioning gap"] == f"{best['cond_gap']:.3f} nats/token"
    test = json.loads((run / "results" / "test" / "validation_summary.json").read_text())
    assert rows["test BLEU (24 sentences, beam 4)"].startswith(f"{test['bleu']:.2f} [")

    # One default decoding: the card, generation_config.json (read by transformers itself),
    # and what validating the folder reports and uses.
    saved = GenerationConfig.from_pretrained(exported)
    result = validate_folder(exported, tiny_data, tmp_path / "validated")
    used = json.loads((tmp_path / "validated" / "validation_summary.json").read_text())
    assert used["generation"] == {k: getattr(saved, k) for k in used["generation"]}
    assert used["generation"]["num_beams"] == 4 and saved.early_stopping is True
    assert rows["decoding"].startswith("beam 4: num_beams 4, max_new_tokens 16, ")
    assert "decoding: beam 4   (num_beams 4, max_new_tokens 16, " in result.stdout


def validate_folder(folder, data, out):
    return run_script("validate_perceiver_model.py", "--checkpoint", folder, "--features",
                      data / "features" / "test", "--manifest", data / "manifests" / "test.tsv",
                      "--output", out, "--device", "cpu", check=True)


def test_attention_plot_has_one_row_per_latent(tiny_run, projection_run, tiny_data, tmp_path,
                                               monkeypatch):
    import matplotlib.pyplot as plt
    run, _ = tiny_run
    out = tmp_path / "v"
    drawn, close = [], plt.close  # the figures, as the validate script (in this process) closes them
    monkeypatch.setattr(plt, "close", lambda fig=None: (drawn.append(fig), close(fig))[1])
    result = validate(run, tiny_data, out, "--attention_plot", "2")
    assert "wrote 2 attention plots" in result.stdout
    labels = [ax.get_ylabel() for fig in drawn if fig is not None for ax in fig.axes]
    # the colour bar says which layer's attention it shows, and that its heads are averaged
    assert labels.count("attention weight\n(Perceiver layer 2 of 2, mean of its 4 heads)") == 2
    test_rows = (tiny_data / "manifests" / "test.tsv").read_text().splitlines()[1:3]
    for row in test_rows:
        sample_id, frames = row.split("\t")[:2]
        attention = np.load(out / "attention" / f"{sample_id}.npy")
        assert attention.shape == (8, int(frames))  # --num_latents 8, one column per frame
        assert (attention >= 0).all() and (attention.sum(1) <= 1 + 1e-5).all()
        assert png_size(out / "attention" / f"{sample_id}.png")[1] > 0
    pooled = validate(projection_run, tiny_data, tmp_path / "p", "--attention_plot", "2",
                      check=False)
    assert_user_error(pooled, "--attention_plot needs a bridge with an attention map "
                              "(perceiver) that reads the encoder's token states")
    assert not (tmp_path / "p").exists()


def test_training_ends_with_val_and_test_scored_as_the_validate_script_scores(
        tiny_run, tiny_data, tmp_path):
    run, result = tiny_run
    for split in ("val", "test"):
        summary = json.loads((run / "results" / split / "validation_summary.json").read_text())
        rows = read_translations(run / "results" / split / "translations.txt")
        assert summary["num_samples"] == len(rows) == 24
        assert summary["manifest"] == str(tiny_data / "manifests" / f"{split}.tsv")
        # trained with greedy per-epoch validation; scored with beam search
        assert summary["generation"]["num_beams"] == 4
        assert f"{split}: BLEU {summary['bleu']:.2f} [" in result.stdout
        refs, hyps = [r[1] for r in rows], [r[2] for r in rows]
        assert summary["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert f"{run / 'results'}/SPLIT/" in result.stdout
    assert f"--table {run / 'results' / 'test'}" in result.stdout
    validate(run, tiny_data, tmp_path / "v", "--num_samples", "0")  # the script's defaults
    assert (read_translations(tmp_path / "v" / "translations.txt")
            == read_translations(run / "results" / "test" / "translations.txt"))


def test_translate_from_python_as_the_validate_script_does(tiny_run, tiny_data):
    from sonar_t5.data.features import load_features
    from sonar_t5.evaluation.translate import load_translator
    run, _ = tiny_run
    rows = read_translations(run / "results" / "test" / "translations.txt")[:6]
    arrays = [load_features(tiny_data / "features" / "test" / f"{sample_id}.npy").numpy()
              for sample_id, *_ in rows]
    translator = load_translator(run / "best_model.pt", device="cpu")
    assert translator.settings.num_beams == 4
    assert translator.translate(arrays, batch_size=4) == [r[2] for r in rows]
    greedy = translator.translate(arrays[:2], num_beams=1)
    assert len(greedy) == 2 and all(isinstance(t, str) for t in greedy)
    with pytest.raises(ValueError, match=r"sample 1: features of shape \(3, 5\)"):
        translator.translate([arrays[0], np.zeros((3, 5))])


def test_table_columns_notes_and_bleu_by_length(tiny_run, projection_run, tmp_path):
    run, _ = tiny_run
    run_script("plot_training_curves.py", "--table", run, run / "results" / "test",
               "--columns", "bleu1", "raw_bleu1", "rouge_l", "--output", tmp_path / "t",
               check=True)
    header = [c.strip() for c in table_lines(tmp_path / "t.md")[0].strip("|").split("|")]
    assert header[-3:] == ["BLEU-1", "raw BLEU-1", "ROUGE-L"]
    summary = json.loads((run / "results" / "test" / "validation_summary.json").read_text())
    row = dict(zip(header, (c.strip() for c in
                            table_lines(tmp_path / "t.md")[3].strip("|").split("|"))))
    assert float(row["raw BLEU-1"]) == pytest.approx(summary["raw_bleu1"], abs=0.005)
    latex = (tmp_path / "t.tex").read_text()
    caption = latex.split("\\caption{")[1].split("\n")[0]
    assert len(caption) < 200 and "signature" not in caption  # the signatures are notes
    notes = latex.split("\\footnotesize")[-1]  # the last: the notes block
    for words in ("ssvp\\_slt's convention", "Uni-Sign's convention", "ROUGE-L F1",
                  summary["bleu1_signature"].replace("|", "\\textbar\\allowbreak{}"),
                  summary["raw_bleu1_signature"].replace("|", "\\textbar\\allowbreak{}")):
        assert words in notes, words
    assert_user_error(run_script("plot_training_curves.py", "--table", run, "--columns",
                                 "blue"), "unknown --columns blue", "raw_bleu4")

    png = tmp_path / "by_length.png"
    result = run_script("plot_training_curves.py", "--by_length", run, projection_run,
                        "--output", png, check=True)
    assert png_size(png)[1] == 675
    rows = read_translations(run / "results" / "test" / "translations.txt")
    short = [(r, h) for _, r, h in rows if 6 <= len(r.split()) <= 10]
    expected = sacrebleu.corpus_bleu([h for _, h in short], [[r for r, _ in short]]).score
    assert f"{run}: 6-10 ({len(short)}) {expected:.2f}" in result.stdout


THESIS_PAGE = r"""\documentclass{article}
\usepackage{booktabs}
\usepackage{graphicx}
\begin{document}
Some text of the thesis before the table.
\input{results.tex}
\end{document}
"""


@pytest.mark.skipif(not (shutil.which("pdflatex") and shutil.which("pdftoppm")),
                    reason="pdflatex and pdftoppm not installed (Debian: texlive-latex-base, "
                           "texlive-latex-recommended, poppler-utils; .ci/run installs them)")
def test_the_latex_table_compiles_and_fits_the_text_width(seed_runs, projection_run, tmp_path):
    from matplotlib.image import imread
    run_script("plot_training_curves.py", "--table", *seed_runs, projection_run, "--columns",
               "all", "--bold_best", "--output", tmp_path / "results", check=True)
    latex = (tmp_path / "results.tex").read_text()
    assert "\\textbf{" in latex and "$\\pm$" in latex  # the best in bold, a seed group's spread
    (tmp_path / "thesis.tex").write_text(THESIS_PAGE)
    compiled = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                               "thesis.tex"], cwd=tmp_path, capture_output=True, text=True)
    log = (tmp_path / "thesis.log").read_text(errors="replace")
    assert compiled.returncode == 0, log[-3000:]
    assert "Overfull \\hbox" not in log, log[-3000:]
    subprocess.run(["pdftoppm", "-png", "-r", "72", "-f", "1", "-l", "1", "thesis.pdf", "page"],
                   cwd=tmp_path, check=True)
    page = imread(next(tmp_path.glob("page*.png")))[..., :3].mean(axis=2)  # 1 pt a pixel
    columns = np.nonzero((page < 0.9).any(axis=0))[0]  # where anything is drawn
    # article's text block on this paper: 345 pt wide, centred (letter: 612 pt)
    margin = (page.shape[1] - 345) / 2
    assert columns.min() >= margin - 2 and columns.max() <= page.shape[1] - margin + 2, (
        columns.min(), columns.max(), page.shape)


def test_significance_of_runs_by_split_and_as_seed_groups(seed_runs, projection_run,
                                                          tiny_data, tmp_path):
    run = seed_runs[-1]
    result = run_script("-m", "sonar_t5.evaluation.significance", projection_run, run, "--n_samples",
                        "50", check=True)
    assert f"{projection_run}" in result.stdout and "p = " in result.stdout
    assert_user_error(run_script("-m", "sonar_t5.evaluation.significance",
                                 projection_run / "results" / "val", run),
                      "was scored on", "test.tsv", "same split")
    # The three seeds scored greedily are one system, beside the same seeds' beam search.
    greedy = []
    for seed_run in seed_runs:
        greedy.append(tmp_path / seed_run.name)
        validate(seed_run, tiny_data, greedy[-1], "--num_beams", "1", "--num_samples", "0")
    result = run_script("-m", "sonar_t5.evaluation.significance", *greedy, *seed_runs,
                        "--n_samples", "50", check=True)
    assert result.stdout.count("(3 seeds)") == 4  # two systems, BLEU and chrF
    scores = [json.loads((g / "validation_summary.json").read_text())["bleu"] for g in greedy]
    mean = sum(scores) / 3
    std = (sum((s - mean) ** 2 for s in scores) / 2) ** 0.5
    assert f"seeds: {mean:.2f} ± {std:.2f} (n=3)" in result.stdout
    assert_user_error(run_script("-m", "sonar_t5.evaluation.significance", *greedy, *seed_runs[:2]),
                      "seed groups of different sizes")
    assert_user_error(run_script("-m", "sonar_t5.evaluation.significance", *seed_runs),
                      "a seed of one experiment", "--seeds_apart")
    apart = run_script("-m", "sonar_t5.evaluation.significance", *seed_runs[:2], "--seeds_apart",
                       "--n_samples", "20", check=True)
    assert "(n=" not in apart.stdout and apart.stdout.count("p = ") == 2


def test_the_python_api_refuses_bad_arguments_by_name(tiny_run, monkeypatch):
    import torch
    from sonar_t5.evaluation.translate import load_translator
    checkpoint = tiny_run[0] / "best_model.pt"
    translator = load_translator(checkpoint, "cpu")
    d, good = translator.input_dim, [np.zeros((3, translator.input_dim), np.float32)]
    for call, error, fragment in [
            (lambda: translator.translate([np.zeros((0, d))]), ValueError, "shape (0, 16)"),
            (lambda: translator.translate([np.zeros((3, d + 1))]), ValueError, "(frames, 16)"),
            (lambda: translator.translate([np.zeros((2, 3, d))]), ValueError, "(2, 3, 16)"),
            (lambda: translator.translate([np.array([{"a": 1}], dtype=object)]), TypeError,
             "sample 0: an array of object, not numbers"),
            (lambda: translator.translate(["clip.npy"]), TypeError,
             "sample 0 is a str, not an array of features (load the file first"),
            (lambda: translator.translate("clip.npy"), TypeError,
             "features must be a list of arrays"),
            (lambda: translator.translate([np.full((3, d), np.nan)]), ValueError,
             "sample 0: its features hold NaN or Inf"),
            (lambda: translator.translate([np.full((3, d), np.inf)]), ValueError, "NaN or Inf"),
            (lambda: translator.translate(good, batch_size=0), ValueError,
             "batch_size must be a whole number of at least 1 (got 0)"),
            (lambda: translator.translate(good, num_beams=0), ValueError,
             "num_beams must be at least 1 (got 0)"),
            (lambda: translator.translate(good, beams=3), TypeError,
             "unknown generation setting 'beams'"),
            (lambda: load_translator(checkpoint, "cpu", beams=3), TypeError,
             "unknown generation setting 'beams'"),
            (lambda: load_translator(checkpoint, "cpu", "fp16"), ValueError,
             "precision='fp16': --precision fp16 needs a CUDA GPU"),
            (lambda: load_translator(checkpoint, "cpu", "fp8"), ValueError,
             "precision='fp8': use one of auto, fp32, bf16, fp16")]:
        with pytest.raises(error) as caught:
            call()
        assert fragment in str(caught.value), (fragment, str(caught.value))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda'.*no CUDA GPU is available"):
        load_translator(checkpoint, "cuda")
    assert len(translator.translate(good, num_beams=2)) == 1
