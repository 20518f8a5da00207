"""launch/slurm.sbatch under a real Slurm: a two-process run, and a time limit's warning that
saves, requeues and resumes. Skipped where no Slurm cluster answers; on a Debian machine
(root): apt-get install slurm-wlm munge && bash launch/local_slurm_cluster.sh."""
import json
import re
import shutil
import subprocess
import time

import pytest

from .conftest import ENV, ROOT, TINY_MODEL, data_args


def cluster_answers():
    if not shutil.which("sbatch"):
        return "Slurm is not installed (apt-get install slurm-wlm munge)"
    nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if nodes.returncode != 0 or not re.search(r"idle|mixed|allocated", nodes.stdout):
        return "no Slurm cluster answers (bash launch/local_slurm_cluster.sh starts one)"
    return None


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(cluster_answers() is not None, reason=str(cluster_answers()))]


def submit(data, out, log, *flags):
    """sbatch the launch file for a tiny run of two processes on CPUs; -> the job id."""
    command = ["sbatch", "--parsable", "--gpus-per-node=0", "--cpus-per-task=2",
               f"--output={log}", "--export=ALL,SONAR_T5_PROCS_PER_NODE=2",
               str(ROOT / "launch" / "slurm.sbatch"), *map(str, data_args(data)), *TINY_MODEL,
               "--output_dir", str(out), *map(str, flags)]
    submitted = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True,
                               check=True)
    return submitted.stdout.strip().split(";")[0]


def job_state(job):
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True)
    found = re.search(r"JobState=(\w+)", shown.stdout)
    return found.group(1) if found else "GONE"


def wait_for(predicate, what, timeout=300):
    start = time.time()
    while not predicate():
        assert time.time() - start < timeout, f"timed out waiting for {what}"
        time.sleep(0.5)


def epochs(out):
    return [r["epoch"] for r in json.loads((out / "training_history.json").read_text())]


def test_a_two_process_run_under_slurm(tiny_data, tmp_path):
    out, log = tmp_path / "run", tmp_path / "job.out"
    job = submit(tiny_data, out, log, "--epochs", 2)
    wait_for(lambda: job_state(job) in ("COMPLETED", "FAILED", "CANCELLED", "GONE"), "the job")
    assert job_state(job) in ("COMPLETED", "GONE"), log.read_text()[-3000:]
    text = log.read_text()
    assert "(fp32, 2 processes, DDP)" in text
    assert epochs(out) == [1, 2] and (out / "results" / "val").is_dir()


def test_the_time_limits_warning_saves_requeues_and_resumes(tiny_data, tmp_path):
    out, log = tmp_path / "run", tmp_path / "job.out"
    job = submit(tiny_data, out, log, "--epochs", 4, "--batch_size", 2)
    wait_for(lambda: (out / "training_history.json").is_file(), "the first epoch")
    # what --signal=B:USR1@300 sends 5 minutes before the time limit
    subprocess.run(["scancel", "--batch", "--signal=USR1", job], check=True)
    wait_for(lambda: "back in the queue to resume" in log.read_text(), "the requeue")
    # Slurm starts the requeued job again once its credential has expired (20 s on the
    # cluster launch/local_slurm_cluster.sh sets up; moving its start earlier fails it)
    wait_for(lambda: job_state(job) in ("COMPLETED", "FAILED", "CANCELLED", "GONE"), "the job",
             timeout=600)
    text = log.read_text()
    assert job_state(job) in ("COMPLETED", "GONE"), text[-3000:]
    assert "terminated (SIGTERM) in epoch" in text  # the save, mid-epoch or after one
    assert f"start 1 of job {job}: resuming {out}" in text
    # torchrun's launcher reports the SIGTERM it got with a traceback of its own; nothing else
    assert text.count("Traceback") == text.count("SignalException: Process"), text[-3000:]
    assert epochs(out) == [1, 2, 3, 4]


def test_a_sweep_as_a_job_array_matches_the_local_sweep(tiny_data, tmp_path, monkeypatch):
    """The same sweep file, here and as one Slurm job array; one task gets the time limit's
    warning mid-run: it saves, requeues and resumes, and the aggregates are the same."""
    from .test_sweep import BRIDGES, sweep, tiny_base, write_sweep
    base = {**tiny_base(tiny_data, epochs=3), "batch_size": 4,
            "num_threads": 1}  # one thread in both places: the same sums, the same outputs
    path = write_sweep(tmp_path / "sweep.yaml", base=base, variants=BRIDGES,
                       axes={"seed": [1, 2]}, baseline="projection")
    local, array = tmp_path / "local", tmp_path / "array"
    sweep(path, "--output_dir", local, check=True)

    monkeypatch.setenv("SONAR_T5_PROCS_PER_NODE", "1")  # a CPU task: one training process
    submitted = sweep(path, "--output_dir", array, "--slurm", "--gpus_per_task", 0,
                      "--array_parallelism", 2, "--sbatch_args=--cpus-per-task=1",
                      check=True)
    job = re.search(r"submitted job array (\d+): 4 tasks", submitted.stdout).group(1)
    first = array / "perceiver,seed=1"
    wait_for(lambda: (first / "training_history.json").is_file(), "task 0's first epoch")
    subprocess.run(["scancel", "--batch", "--signal=USR1", f"{job}_0"], check=True)
    log = array / "logs" / "perceiver,seed=1.log"
    wait_for(lambda: "back in the queue to resume" in log.read_text(), "the requeue")
    wait_for(lambda: not subprocess.run(["squeue", "-h", "-j", job], capture_output=True,
                                        text=True).stdout.strip(), "every task", timeout=900)

    status = sweep("status", array, check=True).stdout
    assert status.splitlines()[-1] == "4 runs: 4 done", status
    text = log.read_text()
    assert "terminated (SIGTERM) in epoch" in text and f"resuming {first}" in text
    assert epochs(first) == [1, 2, 3]
    sweep("aggregate", array, check=True)
    assert (array / "aggregate" / "results.md").read_text() == \
        (local / "aggregate" / "results.md").read_text()
    tests = [json.loads((d / "aggregate" / "significance.json").read_text())["rows"]
             for d in (local, array)]
    assert tests[0] == tests[1]
