"""A sweep as one Slurm job array: a task per run, each task launch/slurm.sbatch (the same
launch as a single run: torchrun on the task's GPUs, a save and requeue at the time limit's
warning, --resume on its next start), its flags read from the sweep directory."""
import os
import shlex
import subprocess

from sonar_t5.common.errors import UserError

from .plan import LOGS_DIR, TOOLKIT
from .status import SLURM_JOBS, exit_file

LAUNCH_FILE = TOOLKIT / "launch" / "slurm.sbatch"


def submit_array(plan, runs, parallelism=0, gpus_per_task=1, sbatch_args=""):
    """sbatch one array of these runs (their indices in the plan) -> the job id."""
    index = {run.name: i for i, run in enumerate(plan.runs)}
    array = ",".join(str(index[run.name]) for run in runs)
    if parallelism:
        array += f"%{parallelism}"
    for run in runs:  # an earlier attempt's status is not this one's
        exit_file(plan, run).unlink(missing_ok=True)
    command = ["sbatch", "--parsable", f"--array={array}",
               f"--job-name=sweep-{plan.sweep_dir.name}",
               f"--output={(plan.sweep_dir / LOGS_DIR).resolve()}/slurm-%A_%a.out",
               f"--gpus-per-node={gpus_per_task}", *shlex.split(sbatch_args),
               str(LAUNCH_FILE), "--sweep_dir", str(plan.sweep_dir.resolve())]
    try:
        # from here: the tasks start in this directory (SLURM_SUBMIT_DIR), where the runs'
        # relative paths point
        done = subprocess.run(command, capture_output=True, text=True, cwd=os.getcwd())
    except FileNotFoundError:
        raise UserError("sbatch not found: Slurm is not installed here", "--slurm",
                        "run the sweep on the cluster's login node, or locally without "
                        "--slurm") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise UserError(f"sbatch refused the array ({last})", " ".join(map(shlex.quote, command)),
                        "check --sbatch_args and --gpus_per_task against the cluster")
    job = done.stdout.strip().split(";")[0]
    with open(plan.sweep_dir / SLURM_JOBS, "a") as f:
        f.write(job + "\n")
    return job
