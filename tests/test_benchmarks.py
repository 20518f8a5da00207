"""The throughput benchmark runs end to end and writes what the README cites (no timings
asserted: speed targets live in benchmarks/, measured as ratios)."""
import json

import pytest

from .conftest import run_script


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
