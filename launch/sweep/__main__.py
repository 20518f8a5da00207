"""Run a sweep of training runs (a matrix of settings x seeds), watch it, aggregate it.

    python -m launch.sweep SWEEP.yaml                 # every run here, one after another
    python -m launch.sweep SWEEP.yaml --parallel 2    # two at a time, threads split
    python -m launch.sweep SWEEP.yaml --slurm         # one Slurm job array, a task per run
    python -m launch.sweep status SWEEP_DIR           # a line per run, and the totals
    python -m launch.sweep aggregate SWEEP_DIR        # table, significance, figure, README

The same command again skips finished runs, resumes interrupted ones and leaves failed ones
alone (--rerun_failed reruns them). When every run is done, the sweep is aggregated into
SWEEP_DIR/aggregate/. The sweep file's format: launch/sweep/plan.py, docs/sweeps.md.
"""
import argparse
import sys

from sonar_t5.common.cli import HelpFormatter
from sonar_t5.common.config_file import read_text
from sonar_t5.common.errors import UserError, cli_main

from .aggregate import aggregate
from .local import LocalSweep, todo
from .plan import load_plan, read_plan, write_plan
from .slurm import submit_array
from .status import STOPPED, run_status, summary_lines, sweep_status

COMMANDS = ("status", "aggregate")


def parse_args(argv):
    if argv and argv[0] in COMMANDS:
        p = argparse.ArgumentParser(prog=f"python -m launch.sweep {argv[0]}",
                                    formatter_class=HelpFormatter)
        p.add_argument("sweep_dir", help="the sweep's directory (its output_dir)")
        if argv[0] == "aggregate":
            p.add_argument("--n_samples", type=int, default=1000,
                           help="resamples of each significance test")
        args = p.parse_args(argv[1:])
        args.command = argv[0]
        return args
    p = argparse.ArgumentParser(prog="python -m launch.sweep", formatter_class=HelpFormatter,
                                description=__doc__.split("\n\n")[0],
                                epilog="also: python -m launch.sweep status|aggregate SWEEP_DIR")
    p.add_argument("sweep_file", help="the sweep: base flags, axes, variants, baseline (YAML)")
    p.add_argument("--output_dir", help="the sweep directory (default: the file's "
                                        "output_dir, else runs/sweeps/FILE_STEM)")
    p.add_argument("--parallel", type=int, default=1,
                   help="local runs at a time, the CPU threads split between them")
    p.add_argument("--rerun_failed", action="store_true",
                   help="start failed runs again (resumed from their last checkpoint if any)")
    p.add_argument("--n_samples", type=int, default=1000,
                   help="resamples of each significance test in the aggregate")
    slurm = p.add_argument_group("Slurm")
    slurm.add_argument("--slurm", action="store_true",
                       help="submit the runs not done as one job array (launch/slurm.sbatch "
                            "per task) instead of running them here")
    slurm.add_argument("--array_parallelism", type=int, default=0,
                       help="at most this many tasks at once (sbatch --array=...%%N; 0: no limit)")
    slurm.add_argument("--gpus_per_task", type=int, default=1,
                       help="GPUs per task: torchrun starts a process on each")
    slurm.add_argument("--sbatch_args", default="",
                       help="more sbatch options, given with '=' (they start with dashes): "
                            "--sbatch_args=\"--partition gpu --time 12:00:00\"")
    args = p.parse_args(argv)
    args.command = "run"
    for flag, least in (("parallel", 1), ("array_parallelism", 0), ("gpus_per_task", 0),
                        ("n_samples", 10)):
        if getattr(args, flag) < least:
            raise UserError(f"--{flag} must be at least {least} (got {getattr(args, flag)})",
                            "command line")
    if args.slurm and args.parallel > 1:
        raise UserError("--parallel is for local runs; with --slurm use --array_parallelism",
                        "command line")
    return args


@cli_main
def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "status":
        print("\n".join(summary_lines(sweep_status(load_plan(args.sweep_dir)))))
        return 0
    if args.command == "aggregate":
        page, _ = aggregate(load_plan(args.sweep_dir), args.n_samples)
        print(page)
        return 0
    # every run's flags checked before anything is written or started
    plan = read_plan(args.sweep_file, args.output_dir,
                     processes=args.gpus_per_task or 1 if args.slurm else 1)
    added = write_plan(plan, read_text(args.sweep_file))
    groups = plan.groups()
    print(f"sweep {plan.sweep_dir}: {len(plan.runs)} runs in {len(groups)} groups (baseline "
          f"{plan.baseline})" + (f", {len(added)} new" if 0 < len(added) < len(plan.runs) else ""))
    starts, failed = todo(plan, args.rerun_failed)
    for status in failed:
        print(f"{status.name}: failed earlier ({status.note}); --rerun_failed starts it again")
    if args.slurm:
        return submit(plan, starts, args)
    ended = LocalSweep(plan, args.parallel).run(starts) if starts else {}
    statuses = sweep_status(plan)
    print("\n".join(summary_lines(statuses)))
    stopped = [code for code in ended.values() if code in STOPPED]
    if stopped:
        return stopped[0]
    if all(s.state == "done" for s in statuses):
        _, verdicts = aggregate(plan, args.n_samples)
        print("\n".join(verdicts))
        print(f"aggregate: {plan.sweep_dir / 'aggregate'}/ (README.md, results.md, results.tex, "
              "significance.txt, scores.png)")
        return 0
    return 1


def submit(plan, starts, args):
    waiting = [run for run, _ in starts if run_status(plan, run).state != "queued"]
    if not waiting:
        print("nothing to submit: every run is done, running or queued")
        return 0
    job = submit_array(plan, waiting, args.array_parallelism, args.gpus_per_task,
                       args.sbatch_args)
    print(f"submitted job array {job}: {len(waiting)} tasks ({', '.join(r.name for r in waiting)})")
    print(f"watch: python -m launch.sweep status {plan.sweep_dir}; when all are done: "
          f"python -m launch.sweep aggregate {plan.sweep_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
