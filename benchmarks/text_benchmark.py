"""The realistic benchmark: train each setting for a fixed time, score its best checkpoint on the
held-out test split, and make the results table with the toolkit's own table tool.

    python -m benchmarks.text_data --output bench_data/text          # once (see its help)
    python -m benchmarks.text_benchmark --data bench_data/text --output runs/text_benchmark \\
        --recipe --settings embedding_perceiver --seeds 1 2 3

Every run is `train_sonar_with_t5.py --time_budget MINUTES` (the first epoch is timed and
the learning rate decays to 0 over the epochs that fit) with a t5-tiny decoder trained from
scratch; when it ends, training scores its best checkpoint on the test split with beam search
(4 beams, the validation script's default) into RUN/results/test/ (each epoch's validation
during training is greedy, for speed; on this benchmark beam 4 scores about 1 BLEU above
greedy). Without --recipe a run
has the toolkit's defaults, as a new user's first command would; with --recipe, the flags of
configs/scratch_decoder.yaml. --parallel N runs N trainings at once with cores/N threads each (on 2 cores, two runs
with one thread each do more in total than one with two). Finished runs are skipped, so the
command can be re-run to add seeds or settings; the table covers every run under --output
with the same --recipe.
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from sonar_t5.common.errors import UserError, cli_main

ROOT = Path(__file__).resolve().parents[1]  # the scripts' directory

# The data each setting reads, and how the model meets it (paths under --data).
SETTINGS = {
    # The original guide's setting: an encoder trained from scratch on the frames, its
    # pooled embedding into the Perceiver.
    "guide_pooled": ["--features", "features_tokens", "--resampler_input", "pooled"],
    "tokens": ["--features", "features_tokens", "--resampler_input", "tokens"],
    # The fine-tuned SONAR embedding -> text case: a 1024-d sentence embedding per sample.
    # (One 1024-d row per sample: the pooled embedding and the "token states" are the same.)
    "embedding_perceiver": ["--features", "features_embedding", "--identity_encoder",
                            "--resampler_input", "pooled"],
    "embedding_projection": ["--features", "features_embedding", "--identity_encoder",
                             "--resampler_input", "pooled", "--bridge", "projection"],
}
# What a from-scratch decoder needs within a fixed budget (docs/real_text.md).
RECIPE = ["--config", str(ROOT / "configs" / "scratch_decoder.yaml")]
# Held fixed in every run: the decoder, and greedy decoding of the per-epoch validation for
# speed. (On the command line, these win over the recipe's file.)
COMMON = ["--t5_model", "t5-tiny", "--epochs", "100", "--num_workers", "0",
          "--num_beams", "1", "--max_new_tokens", "48", "--device", "cpu"]

TEST_SCORES = "results/test"  # what training writes when it ends: the test split, beam 4


def setting_flags(setting):
    """-> (the feature directory under --data, the setting's model flags)."""
    flags = list(SETTINGS[setting])
    features = flags.pop(flags.index("--features") + 1)
    flags.remove("--features")
    return features, flags


def train_command(data, setting, run_dir, minutes, seed, threads, recipe, extra):
    features, flags = setting_flags(setting)
    return [sys.executable, str(ROOT / "train_sonar_with_t5.py"), *COMMON, *(RECIPE if recipe else []),
            *flags, *extra,
            "--train_features", str(data / features / "train"),
            "--train_manifest", str(data / "manifests" / "train.tsv"),
            "--val_features", str(data / features / "val"),
            "--val_manifest", str(data / "manifests" / "val.tsv"),
            "--test_features", str(data / features / "test"),
            "--test_manifest", str(data / "manifests" / "test.tsv"),
            "--time_budget", str(minutes), "--seed", str(seed), "--num_threads", str(threads),
            "--output_dir", str(run_dir), "--overwrite"]


def run_all(jobs, parallel):
    """jobs: [(run_dir, [command, ...])]; each job's commands in order, `parallel` at once.
    Each job's output goes to RUN_DIR.log."""
    pending, running, failed = list(jobs), [], []
    while pending or running:
        while pending and len(running) < parallel:
            run_dir, commands = pending.pop(0)
            log = open(f"{run_dir}.log", "w")
            script = " && ".join(subprocess.list2cmdline(c) for c in commands)
            print(f"start {run_dir.name}", flush=True)
            running.append((run_dir, log, subprocess.Popen(script, shell=True, stdout=log,
                                                           stderr=subprocess.STDOUT)))
        time.sleep(5)
        for item in [r for r in running if r[2].poll() is not None]:
            running.remove(item)
            item[1].close()
            status = "done" if item[2].returncode == 0 else f"FAILED ({item[2].returncode})"
            print(f"{status} {item[0].name} (log: {item[0]}.log)", flush=True)
            if item[2].returncode:
                failed.append(item[0])
    return failed


@cli_main
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="what python -m benchmarks.text_data wrote")
    p.add_argument("--output", required=True, help="directory for the runs and the table")
    p.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[1])
    p.add_argument("--minutes", type=float, default=15, help="training time per run")
    p.add_argument("--recipe", action="store_true", help="add RECIPE's flags to every run")
    p.add_argument("--parallel", type=int, default=2, help="trainings at once")
    p.add_argument("--threads", type=int, default=0,
                   help="threads per training (default: cores / --parallel)")
    p.add_argument("--extra", default="", help="more training flags, e.g. '--word_dropout 0.1' "
                                               "(the run directory's name says them)")
    args = p.parse_args(argv)
    data = Path(args.data)
    if not (data / "manifests" / "train.tsv").is_file():
        raise UserError("no benchmark data", str(data),
                        "make it with python -m benchmarks.text_data --output DIR")
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.parallel)
    root = Path(args.output) / ("recipe" if args.recipe else "defaults")
    root.mkdir(parents=True, exist_ok=True)
    extra = args.extra.split()
    suffix = "".join(extra).replace("--", "_")
    jobs = []
    for seed in args.seeds:
        for setting in args.settings:
            run_dir = root / f"{setting}{suffix}_seed{seed}"
            if (run_dir / TEST_SCORES / "validation_summary.json").is_file():
                continue  # done before
            jobs.append((run_dir, [train_command(data, setting, run_dir, args.minutes, seed,
                                                 threads, args.recipe, extra)]))
    failed = run_all(jobs, args.parallel)
    summaries = sorted(str(s.parent) for s in
                       root.glob(f"*/{TEST_SCORES}/validation_summary.json"))
    if summaries:
        subprocess.run([sys.executable, str(ROOT / "plot_training_curves.py"), "--table",
                        *summaries,
                        "--output", str(root / "results")], check=True)
        print((root / "results.md").read_text())
    if failed:
        raise UserError(f"{len(failed)} run(s) failed", ", ".join(f"{f}.log" for f in failed),
                        "read the log")


if __name__ == "__main__":
    main()
