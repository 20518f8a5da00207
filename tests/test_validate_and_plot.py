"""validate_perceiver_model.py, plot_training_curves.py and the results table."""
import json

import pytest
import sacrebleu

from .conftest import TINY_MODEL, assert_user_error, data_args, run_script

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
    run_script("train_sonar_with_t5.py", *data_args(tiny_data), *TINY_MODEL, "--epochs", "1",
               "--bridge", "projection", "--output_dir", out, check=True)
    return out


def test_compare_and_results_table(tiny_run, projection_run, tmp_path):
    run, _ = tiny_run
    png = tmp_path / "compare.png"
    result = run_script("plot_training_curves.py", "--compare", run, projection_run,
                        "--output", png, check=True)
    assert png_size(png) == (1800, 675)
    assert "tiny_perceiver:" in result.stdout and "tiny_projection:" in result.stdout
    run_script("plot_training_curves.py", "--table", run, projection_run, "--output",
               tmp_path / "results", check=True)
    markdown = (tmp_path / "results.md").read_text().splitlines()
    assert markdown[0].startswith("| run") and len(markdown) == 4
    assert "tiny_perceiver" in markdown[2] and "perceiver" in markdown[2]
    assert "tiny_projection" in markdown[3] and "projection" in markdown[3]
    latex = (tmp_path / "results.tex").read_text()
    for rule in ("\\toprule", "\\midrule", "\\bottomrule", "\\begin{tabular}", "\\end{tabular}"):
        assert rule in latex
    assert "tiny\\_perceiver" in latex and "num\\_latents" in latex
    body = latex.split("\\midrule")[1].split("\\bottomrule")[0]
    assert all(row.count("&") == 12 for row in body.strip().split("\\\\") if row.strip())
