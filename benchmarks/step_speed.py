"""Training samples/s before and after a change, on one CPU core, side by side in one run.

    python -m benchmarks.text_data --output bench_data/text      # once (see its help)
    python -m benchmarks.step_speed --data bench_data/text --before REV [--steps 200]

For each configuration of benchmarks/step_configs.py, the training script of git revision REV
(extracted for the run with git archive) and the one of this working tree train the same
--steps batches of real sentences with one thread (--threads), alternating before and after
--repeats times, every step logged (train_log.jsonl). Reported per configuration: samples/s of
each (the median of the repeats, over the steps after the first --skip: start-up, the first
step's FLOP count and the allocator's warm-up are not the step), after/before, and the
relative difference between the two trees' losses step by step: at the first step it is
rounding (about 1e-7) where a change leaves the math as it was, and it grows from there as the
updates compound it. Prints a Markdown table and writes JSON.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from sonar_t5.common.errors import UserError, cli_main

from .step_configs import CONFIGS, ROOT, batch_size, step_data


def extract(revision, into):
    """The tree of `revision` under `into` (no checkout, no worktree: git archive)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", revision],
                             capture_output=True)
    if archive.returncode:
        raise UserError(f"git cannot read revision {revision!r}",
                        archive.stderr.decode().strip(), "give a commit of this repository")
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def train(tree, flags, out, threads):
    """One run of `tree`'s training script -> its train_log.jsonl records."""
    command = [sys.executable, "train_sonar_with_t5.py", *flags, "--output_dir", str(out),
               "--log_every", "1", "--num_threads", str(threads)]
    result = subprocess.run(command, cwd=tree, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{tree}: training failed ({result.returncode}):\n"
                         f"{result.stderr[-2000:]}")
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def samples_per_s(records, batch, skip):
    """Samples over seconds of the steps after the first `skip`: each record's rate covers
    the time since the previous one (data, forward, backward, optimizer step, the log line)."""
    steady = records[skip:]
    return len(steady) * batch / sum(batch / r["samples_per_s"] for r in steady)


def loss_differences(before, after):
    """The relative difference of the two trees' losses at each step."""
    return [abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(after, before)]


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="what python -m benchmarks.text_data wrote")
    p.add_argument("--before", required=True, metavar="REV",
                   help="the git revision to compare with, e.g. the commit before a change")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--skip", type=int, default=5)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--output", default=str(ROOT / "benchmarks" / "step_speed_results.json"))
    args = p.parse_args(argv)
    results = {"before": args.before, "steps": args.steps, "threads": args.threads,
               "configs": {}}
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        trees = {"before": extract(args.before, work / "before"), "after": ROOT}
        for name in args.configs:
            flags = step_data(args.data, work / name, name, args.steps)
            rates, logs = {"before": [], "after": []}, {}
            for repeat in range(args.repeats):
                order = ("before", "after") if repeat % 2 == 0 else ("after", "before")
                for which in order:  # alternating: a drifting machine weighs on both alike
                    records = train(trees[which], flags, work / name / f"{which}_{repeat}",
                                    args.threads)
                    rates[which].append(samples_per_s(records, batch_size(name), args.skip))
                    logs.setdefault(which, records)
                    print(f"{name} {which} #{repeat + 1}: {rates[which][-1]:.1f} samples/s",
                          flush=True)
            before, after = (statistics.median(rates[w]) for w in ("before", "after"))
            differences = loss_differences(logs["before"], logs["after"])
            results["configs"][name] = {
                "before_samples_per_s": before, "after_samples_per_s": after,
                "speedup": after / before, "all_samples_per_s": rates,
                "largest_relative_loss_difference": max(differences),
                # where it grows from: rounding (a fused kernel, another summation order)
                # compounds through the updates, while an error in the math shows at step 1
                "relative_loss_difference_at_step": {
                    step: differences[step - 1] for step in (1, 10, 50, 100, 200)
                    if step <= len(differences)},
                "mfu_after": statistics.median(r["mfu"] for r in logs["after"][args.skip:]
                                               if r.get("mfu") is not None)}
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n| configuration | before (samples/s) | after (samples/s) | after/before | "
          f"loss difference at step 1 / largest in {args.steps} | MFU after |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results["configs"].items():
        print(f"| {name} | {r['before_samples_per_s']:.1f} | {r['after_samples_per_s']:.1f} | "
              f"{r['speedup']:.2f}x | {r['relative_loss_difference_at_step'][1]:.1e} / "
              f"{r['largest_relative_loss_difference']:.1e} | "
              f"{r['mfu_after']:.1%} |")
    print(f"\nwritten: {args.output}")


if __name__ == "__main__":
    main()
