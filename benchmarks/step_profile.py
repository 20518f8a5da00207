"""Where a training step's time goes: torch.profiler over the step benchmark's configurations.

    python -m benchmarks.text_data --output bench_data/text      # once (see its help)
    python -m benchmarks.step_profile --data bench_data/text [--threads 1] [--steps 20]

Builds each configuration (benchmarks/step_configs.py) as the training script does (its flags,
data sets, model, loaders and optimizer) and runs the training engine's own epoch loop: after
--warmup steps, --steps steps run under the profiler. Prints, per configuration, the operators
with the most self CPU time (Markdown), and the share of the step spent outside operators
(Python, the data loader).
"""
import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule

from sonar_t5.common.errors import cli_main
from sonar_t5.training.args import parse_args
from sonar_t5.training.distributed import Dist, Runtime
from sonar_t5.training.engine import StepSettings, train_one_epoch
from sonar_t5.training.mfu import FlopsMeter
from sonar_t5.training.optim import OptimizerSettings, build_optimization
from sonar_t5.training.setup import (DataSettings, LoaderSettings, ModelSettings, build_new_model,
                                     make_loaders, new_decoder, open_datasets)
from sonar_t5.training.state import TrainState

from .step_configs import CONFIGS, step_data


def profile_config(name, data, work, warmup, steps, rows):
    """-> (operator table lines, steps/s while profiled, share of the step in operators)."""
    args = parse_args(step_data(data, work / name, name, warmup + steps + 1)
                      + ["--output_dir", str(work / name / "run"), "--log_every", "1"])
    torch.manual_seed(args.seed)
    runtime = Runtime(torch.device("cpu"), "fp32", Dist())
    train_set, val_set = open_datasets(DataSettings.from_args(args))
    t5, tokenizer = new_decoder(args, train_set, runtime.dist)
    model = build_new_model(ModelSettings.from_args(args), t5, tokenizer, train_set,
                            runtime.dist)
    model.train()
    train_loader, _ = make_loaders(LoaderSettings.from_args(args), train_set, val_set,
                                   tokenizer, runtime.dist, runtime.device)
    optimization = build_optimization(model, OptimizerSettings.from_args(args),
                                      len(train_loader), runtime)
    timing = schedule(wait=0, warmup=warmup, active=steps, repeat=1)
    started = []
    with profile(activities=[ProfilerActivity.CPU], schedule=timing) as prof:
        def each_step(record):  # called after every optimizer step (--log_every 1)
            prof.step()
            if record["step"] == warmup:
                started.append(time.perf_counter())
            elif record["step"] == warmup + steps:
                started.append(time.perf_counter())
        train_one_epoch(1, model, train_loader, optimization, TrainState(),
                        StepSettings.from_args(args), runtime, FlopsMeter(1.0, "none"),
                        log_step=each_step)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    wall_us = (started[1] - started[0]) * 1e6
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:rows]
    lines = ["| operator | self CPU | share | calls per step |", "|---|---:|---:|---:|"]
    for e in top:
        lines.append(f"| `{e.key}` | {e.self_cpu_time_total / steps / 1e3:.2f} ms | "
                     f"{e.self_cpu_time_total / total:.1%} | {e.count / steps:g} |")
    return lines, steps / (wall_us / 1e6), total / wall_us


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="what python -m benchmarks.text_data wrote")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rows", type=int, default=12)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as work:
        for name in args.configs:
            lines, rate, in_ops = profile_config(name, args.data, Path(work), args.warmup,
                                                 args.steps, args.rows)
            print(f"\n### {name} ({args.threads} thread{'s' * (args.threads > 1)}, "
                  f"{rate:.2f} steps/s under the profiler; operators' self time = "
                  f"{in_ops:.0%} of the wall time)\n")
            print("\n".join(lines))


if __name__ == "__main__":
    main()
