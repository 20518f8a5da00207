"""Where each run of a sweep stands, read from its files alone (any process can ask, on any
machine that sees the sweep directory):

- done: its training exited 0 (logs/NAME.exit, written by whoever ran it);
- running: its output directory's lock is held (training holds it while it runs);
- queued: a Slurm array task of the sweep's, not started yet (squeue);
- interrupted: stopped by a signal (Ctrl-C, SIGTERM, a time limit), or killed, after a
  checkpoint: the next start resumes it;
- failed: exited with an error; its log's last line says which; rerun only when asked;
- pending: nothing of it yet (or it stopped before its first checkpoint).
"""
import fcntl
import json
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass

from .plan import LOGS_DIR

LOCK_NAME = ".lock"  # train_sonar_with_t5.py's lock in its output directory
# training's exit status after Ctrl-C / SIGTERM (saved, resumable); a status below 0 is a
# process killed outright (kill -9, the out-of-memory killer): resumed from its last save
STOPPED = (130, 143)
SLURM_JOBS = "slurm_jobs.txt"  # the array jobs submitted for this sweep, one id a line


@dataclass
class RunStatus:
    name: str
    group: str
    state: str
    epochs: int  # recorded in training_history.json
    planned: int  # --epochs
    best_bleu: float  # best validation BLEU so far, or None
    note: str = ""  # a failure's last line

    def line(self):
        bleu = "-" if self.best_bleu is None else f"{self.best_bleu:.2f}"
        return (f"{self.name:<{max(24, len(self.name))}}  {self.state:<11}  "
                f"epochs {self.epochs}/{self.planned or '?'}  best val BLEU {bleu}"
                + (f"  {self.note}" if self.note else ""))


def run_status(plan, run, queued=()):
    folder = plan.run_dir(run)
    history = read_history(folder)
    best = max((r["val_bleu"] for r in history), default=None)
    exit_code = read_exit(exit_file(plan, run))
    planned = run.epochs or run.flags.get("epochs")
    note = ""
    if lock_held(folder / LOCK_NAME):
        state = "running"
    elif exit_code == 0 and (folder / "best_model.pt").is_file():
        state = "done"
    elif run.name in queued:
        state = "queued"
    elif exit_code is not None and exit_code > 0 and exit_code not in STOPPED:
        state, note = "failed", f"exit {exit_code}: {last_error(log_file(plan, run))}"
    elif (folder / "last_model.pt").is_file():
        state = "interrupted"
    else:
        state = "pending"
    return RunStatus(run.name, run.group, state, len(history), planned, best, note)


def sweep_status(plan):
    queued = queued_runs(plan)
    return [run_status(plan, run, queued) for run in plan.runs]


def summary_lines(statuses):
    counts = {}
    for s in statuses:
        counts[s.state] = counts.get(s.state, 0) + 1
    order = ("done", "running", "queued", "interrupted", "failed", "pending")
    return [s.line() for s in statuses] + [
        f"{len(statuses)} runs: " + ", ".join(f"{counts[k]} {k}" for k in order if k in counts)]


def exit_file(plan, run):
    return plan.sweep_dir / LOGS_DIR / f"{run.name}.exit"


def log_file(plan, run):
    return plan.sweep_dir / LOGS_DIR / f"{run.name}.log"


def read_history(folder):
    try:
        history = json.loads((folder / "training_history.json").read_text(encoding="utf-8"))
        return [r for r in history if isinstance(r, dict) and r.get("val_bleu") is not None]
    except (OSError, ValueError):
        return []


def read_exit(path):
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def last_error(log):
    """The log's last line that says what went wrong (training's one-line errors start with
    error:), else its last line."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()
                 if line.strip()]
    except OSError:
        return "(no log)"
    errors = [line for line in lines if line.startswith(("error:", "Error", "RuntimeError"))]
    text = (errors or lines or ["(empty log)"])[-1]
    return text if len(text) <= 200 else text[:197] + "..."


def lock_held(path):
    """Whether some process holds a lock on the file (training's fcntl.lockf), asked without
    taking it: a probe that took the lock, however briefly, could turn a run starting at that
    moment away."""
    try:
        fd = open(path, "rb")
    except OSError:
        return False
    with fd:
        if sys.platform != "linux":  # struct flock's layout below is Linux's
            return True  # the lock file exists only while a run holds it, or after a kill
        probe = struct.pack("hhqqi4x", fcntl.F_WRLCK, 0, 0, 0, 0)
        found = struct.unpack("hhqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, probe))
        return found[0] != fcntl.F_UNLCK


def queued_runs(plan):
    """Names of runs whose Slurm array task is waiting in the queue (squeue), if the sweep was
    submitted and Slurm answers."""
    jobs_file = plan.sweep_dir / SLURM_JOBS
    if not jobs_file.is_file() or not shutil.which("squeue"):
        return set()
    jobs = ",".join(jobs_file.read_text().split())
    shown = subprocess.run(["squeue", "-h", "-r", "-j", jobs, "-t", "PENDING,REQUEUED",
                            "-o", "%K"], capture_output=True, text=True)
    names = [run.name for run in plan.runs]
    return {names[int(i)] for i in shown.stdout.split() if i.isdigit() and int(i) < len(names)}
