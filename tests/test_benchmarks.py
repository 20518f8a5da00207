"""The throughput benchmark runs end to end and writes what the README cites (no timings
asserted: speed targets live in benchmarks/, measured as ratios)."""
import json

import pytest

from benchmarks.step_speed import loss_differences, samples_per_s

from .conftest import assert_user_error, run_script


@pytest.mark.slow
def test_benchmark_writes_table_and_json(tmp_path):
    out = tmp_path / "bench.json"
    result = run_script("-m", "benchmarks.run", "--num_train", "8", "--num_val", "4",
                        "--num_generate", "4", "--batch_size", "4", "--max_new_tokens", "4",
                        "--val_beams", "1", "--train_modes", "frozen_no_cache", "frozen_cache",
                        "--output", out, check=True)
    r = json.loads(out.read_text())
    assert r["encoder"] == "512 x 4" and r["encoder_params"] > 10**7
    assert set(r["projected_hours"]) == {"frozen_no_cache", "frozen_cache"}
    assert all(h > 0 for h in r["projected_hours"].values())
    assert r["ratio_frozen_cache_vs_no_cache"] == r["train_frozen_cache"] / r["train_frozen_no_cache"]
    assert "train_unfrozen" not in r and "time_split_unfrozen" not in r
    assert r["num_generate"] == 4 and r["generate_batched_beam4"] > 0
    assert "ratio frozen cache / no cache" in result.stdout
    assert "projected 30 epochs on How2Sign" in result.stdout


def test_step_speed_reads_rates_and_loss_differences_from_the_step_log():
    """Each train_log.jsonl record's rate covers the time since the one before it."""
    before = [{"samples_per_s": 10.0, "loss": 2.0}, {"samples_per_s": 20.0, "loss": 1.0},
              {"samples_per_s": 40.0, "loss": 0.5}]
    after = [{"loss": 2.0}, {"loss": 1.1}, {"loss": 0.5}]
    assert samples_per_s(before, batch=4, skip=1) == pytest.approx(8 / (4 / 20 + 4 / 40))
    assert loss_differences(before, after) == pytest.approx([0.0, 0.1, 0.0])


def test_step_speed_refuses_a_revision_git_cannot_read(tmp_path):
    result = run_script("-m", "benchmarks.step_speed", "--data", tmp_path, "--before",
                        "no-such-revision", "--output", tmp_path / "out.json")
    assert_user_error(result, "git cannot read revision 'no-such-revision'")
    assert not (tmp_path / "out.json").exists()
