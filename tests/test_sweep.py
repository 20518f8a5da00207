"""python -m launch.sweep: a sweep file expanded into named runs and checked before anything
starts; run here, stopped and started again without repeating finished runs; watched; and
aggregated into one table with the paired tests against the baseline."""
import json
import os
import signal
import subprocess
import time

import pytest
import yaml

from .conftest import ROOT, TINY_MODEL, assert_user_error, data_args, held_out_args, run_script
from .processes import start_python


def tiny_base(data, epochs=2):
    """The tiny model on the tiny data, as a sweep's base flags."""
    flags = [*map(str, data_args(data)), *map(str, held_out_args(data)), *TINY_MODEL,
             "--epochs", str(epochs)]
    base = {}
    for i, flag in enumerate(flags):
        if flag.startswith("--"):
            base[flag[2:]] = flags[i + 1]
    return base


def write_sweep(path, **sweep):
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def sweep(*args, **kwargs):
    return run_script("-m", "launch.sweep", *args, **kwargs)


BRIDGES = {"perceiver": {"resampler_input": "tokens"},
           "projection": {"bridge": "projection", "resampler_input": "pooled"}}


# -- bad input: one line, exit 2, nothing started -------------------------------------------

@pytest.mark.parametrize("sweep_file, fragments", [
    (dict(axes={"seed": [1, 2], "learning_rat": [1e-3]}),
     ["unknown flag 'learning_rat'", "sweep.yaml:LINE OF   learning_rat:"]),
    (dict(axes={"seed": [1, 2], "learning_rate": [1e-3, -1.0]}),
     ["run learning_rate=-1,seed=1: --learning_rate must be",
      "sweep.yaml:LINE OF   learning_rate:"]),
    (dict(axes={"learning_rate": [1e-4, 0.0001]}),
     ["two runs map to one directory 'learning_rate=0.0001'"]),
    (dict(variants=BRIDGES, axes={"seed": [1]}, baseline="projecton"),
     ["baseline 'projecton' is not a group of this sweep", "its groups: perceiver, projection"]),
    (dict(axes={"seed": [1], "output_dir": ["a", "b"]}),
     ["'output_dir' is set by the sweep"]),
    (dict(axes={"seed": 1}), ["axis 'seed' needs a list of values"]),
    (dict(variants={"logs": {}}, axes={"seed": [1]}), ["variant name 'logs' cannot name"]),
])
def test_a_bad_sweep_is_one_line_and_starts_nothing(tiny_data, tmp_path, sweep_file, fragments):
    out = tmp_path / "sweep_dir"
    path = write_sweep(tmp_path / "sweep.yaml", output_dir=str(out), base=tiny_base(tiny_data),
                       **sweep_file)
    lines = path.read_text().splitlines()
    fragments = [f.split("LINE OF ")[0] + str(max(  # the line that set it: the axis's
        i for i, line in enumerate(lines, 1) if line.startswith(f.split("LINE OF ")[1])))
        if "LINE OF " in f else f for f in fragments]
    assert_user_error(sweep(path), *fragments)
    assert not out.exists()


def test_a_sweep_directory_of_another_plan_is_refused_with_the_difference(tiny_data, tmp_path):
    out = tmp_path / "sweep_dir"
    first = write_sweep(tmp_path / "a.yaml", output_dir=str(out), base=tiny_base(tiny_data),
                        axes={"seed": [1]})
    from launch.sweep.plan import read_plan, write_plan
    write_plan(read_plan(first), first.read_text())  # planned; no run started
    before = sorted(p.name for p in out.rglob("*"))
    changed = write_sweep(tmp_path / "b.yaml", output_dir=str(out),
                          base={**tiny_base(tiny_data), "learning_rate": 5e-4}, axes={"seed": [1]})
    assert_user_error(sweep(changed), "changed run 'seed=1'", "learning_rate: 0.001 -> 0.0005",
                      "plan.json")
    assert sorted(p.name for p in out.rglob("*")) == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert_user_error(sweep(first, "--output_dir", tmp_path / "other"),
                      "holds something other than a sweep")


# -- running, stopping, starting again, watching, aggregating ---------------------------------

def log_starts(out, name):
    return (out / "logs" / f"{name}.log").read_text().count("\n=== ")


def status_lines(out):
    result = sweep("status", out, check=True)
    return {line.split()[0]: line for line in result.stdout.splitlines()[:-1]}, \
        result.stdout.splitlines()[-1]


@pytest.mark.slow
def test_a_sweep_stopped_mid_run_resumes_and_is_aggregated(tiny_data, tmp_path):
    out = tmp_path / "sweep_dir"
    path = write_sweep(tmp_path / "sweep.yaml", output_dir=str(out),
                       base={**tiny_base(tiny_data, epochs=3), "batch_size": 4},
                       variants=BRIDGES, axes={"seed": [1, 2]}, baseline="projection")
    # SIGTERM to the sweep alone, once its second run has saved an epoch: the run saves and
    # stops, and no further run starts
    proc = start_python("-m", "launch.sweep", path, cwd=ROOT, text=True,
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    second = out / "perceiver,seed=2" / "training_history.json"
    deadline = time.time() + 300
    while not second.is_file():
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr[-3000:]
    assert "perceiver,seed=2: stopped" in stdout
    states, total = status_lines(out)
    assert "done" in states["perceiver,seed=1"] and "interrupted" in states["perceiver,seed=2"]
    assert "pending" in states["projection,seed=1"]
    assert total == "4 runs: 1 done, 1 interrupted, 2 pending"
    finished = (out / "perceiver,seed=1" / "best_model.pt").stat().st_mtime_ns

    # started again: the finished run is not repeated, the stopped one resumes, and the sweep
    # ends aggregated
    result = sweep(path, check=True)
    assert "perceiver,seed=2: resuming" in result.stdout
    assert "perceiver,seed=1:" not in result.stdout
    assert log_starts(out, "perceiver,seed=1") == 1 and log_starts(out, "perceiver,seed=2") == 2
    assert (out / "perceiver,seed=1" / "best_model.pt").stat().st_mtime_ns == finished
    assert "resuming" in (out / "logs" / "perceiver,seed=2.log").read_text()
    history = json.loads((out / "perceiver,seed=2" / "training_history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert "perceiver vs projection: BLEU" in result.stdout
    assert "4 runs: 4 done" in result.stdout

    # the aggregate: one row per group, seeds pooled; the baseline first in the tests
    aggregate = out / "aggregate"
    table = (aggregate / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| perc") or
            line.startswith("| proj")]
    assert [r.split("|")[1].strip() for r in rows] == ["perceiver", "projection"]
    assert all(" ± " in r for r in rows) and "raw BLEU-4" in table
    tests = json.loads((aggregate / "significance.json").read_text())
    assert [r["system"] for r in tests["rows"]["BLEU"]] == ["projection", "perceiver"]
    assert tests["rows"]["BLEU"][1]["n"] == 2 and tests["split"] == "test"
    assert 0 < tests["rows"]["BLEU"][1]["p_bootstrap"] <= 1
    assert (aggregate / "scores.png").read_bytes()[:4] == b"\x89PNG"
    assert (aggregate / "scores.pdf").read_bytes()[:4] == b"%PDF"
    assert r"\toprule" in (aggregate / "results.tex").read_text()
    readme = (aggregate / "README.md").read_text()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    assert f"Toolkit commit: {commit}" in readme
    assert "test.tsv`, 24 samples, sha256" in readme
    assert "nrefs:1|case:mixed|eff:no|tok:13a" in readme  # the conventions' signatures

    # a third time: nothing to run, nothing started
    again = sweep(path, check=True)
    assert "started" not in again.stdout and "resuming" not in again.stdout
    assert all(log_starts(out, n) == s for n, s in
               [("perceiver,seed=1", 1), ("perceiver,seed=2", 2), ("projection,seed=1", 1)])
    # one seed more: the sweep is extended, the runs it has are kept
    bigger = write_sweep(tmp_path / "sweep.yaml", output_dir=str(out),
                         base={**tiny_base(tiny_data, epochs=3), "batch_size": 4},
                         variants=BRIDGES, axes={"seed": [1, 2, 3]}, baseline="projection")
    from launch.sweep.plan import read_plan, write_plan
    assert write_plan(read_plan(bigger), bigger.read_text()) == ["perceiver,seed=3",
                                                                 "projection,seed=3"]


@pytest.mark.slow
def test_a_failed_run_is_reported_and_rerun_only_when_asked(tiny_data, tmp_path):
    out = tmp_path / "sweep_dir"
    path = write_sweep(tmp_path / "sweep.yaml", output_dir=str(out), base=tiny_base(tiny_data),
                       variants={"good": {}, "broken": {"train_manifest": str(tmp_path / "none.tsv")}},
                       axes={"seed": [1]}, baseline="good")
    result = sweep(path)
    assert result.returncode == 1
    assert "broken,seed=1: failed (exit 2: error: manifest not found" in result.stdout, result.stdout
    states, total = status_lines(out)
    assert "failed" in states["broken,seed=1"] and "none.tsv" in states["broken,seed=1"]
    assert total == "2 runs: 1 done, 1 failed"
    assert not (out / "aggregate").exists()  # not every run is done
    again = sweep(path)
    assert again.returncode == 1 and "failed earlier" in again.stdout
    assert log_starts(out, "broken,seed=1") == 1 and log_starts(out, "good,seed=1") == 1
    rerun = sweep(path, "--rerun_failed")
    assert log_starts(out, "broken,seed=1") == 2 and rerun.returncode == 1
    # on demand, the aggregate of what is done, saying what is left out
    aggregated = sweep("aggregate", out, check=True)
    assert "Not done, left out: broken,seed=1" in aggregated.stdout
    assert "Not tested: one group: nothing to compare" in aggregated.stdout


def test_parallel_runs_share_the_cpu_threads(tmp_path):
    from launch.sweep.local import LocalSweep, run_command
    from launch.sweep.plan import Plan, Run
    plan = Plan("s.yaml", tmp_path, [Run("seed=1", "base", {"seed": 1}, {"seed": 1})], "base")
    threads = LocalSweep(plan, parallel=2).threads
    assert threads == max(1, (os.cpu_count() or 1) // 2)
    command = run_command(plan, plan.runs[0], resume=True, threads=threads)
    assert command[-3:] == ["--resume", "--num_threads", str(threads)]
    assert LocalSweep(plan, parallel=1).threads == 0  # one run: PyTorch's own choice
