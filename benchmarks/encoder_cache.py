"""The frozen-encoder cache on disk: what a second run pays to reuse it, and RAM that stays
flat as the data set grows.

    python -m benchmarks.encoder_cache          # both parts, about 10 min on 2 CPU cores

Every figure comes from train_sonar_with_t5.py itself, run as a user runs it (a fresh process
each, --freeze_encoder --resampler_input tokens, one epoch, a t5-tiny decoder):

1. Reuse. An encoder of the shape of ssvp_slt's SONAR ASL encoder (t5-v1_1-large: 1024 x 24
   layers, random weights, saved as models.convert_sonar_checkpoint writes it) over 64 + 16
   clips of 100-300 frames of 768-d features. Run 1 builds the cache, run 2 (another output
   directory, the same flags) reuses it. Figures: each run's cache step (config.json's
   encoder_cache seconds: hashing the weights, checking every feature file, and building or
   opening), their ratio, and whether run 2's first epoch equals run 1's.
2. RAM. 1,000 and then 4,000 clips of 300 frames whose token states are 1024-d (a small
   feature encoder with a 1024-d output: the states are SONAR-sized, the encoder cheap). Each
   run's peak resident memory (VmHWM), beside the size of its cache, which the earlier
   in-RAM cache held in each process.

Then the How2Sign projection for a grid of 10 frozen runs with the SONAR-scale encoder, with
and without reuse, from benchmarks/results_sonar_scale.json (benchmarks/run.py's measured
build and training rates on this machine) and the reuse costs measured here.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from sonar_t5.common.checkpoint_io import save_checkpoint
from sonar_t5.data.dataset import FeatureDataset
from sonar_t5.data.encoder_cache import samples_hash
from sonar_t5.models.encoders import CONVERTED_KIND
from sonar_t5.models.feature_encoder import (FeatureEncoder, FeatureEncoderConfig,
                                             save_feature_encoder)
from sonar_t5.models.sonar_asl_encoder import SonarAslEncoder, SonarAslEncoderConfig

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("show you how to fold cut paint the paper board brush carefully now we are going "
         "first make sure this is a small large clean wooden").split()
HOW2SIGN_CLIPS = 31_128 + 1_741  # train + val
GRID = 10
RUN_FLAGS = ["--freeze_encoder", "--resampler_input", "tokens", "--epochs", "1",
             "--t5_model", "t5-tiny", "--vocab_size", "200", "--hidden_dim", "64",
             "--num_latents", "8", "--num_heads", "4", "--batch_size", "16",
             "--num_beams", "1", "--max_new_tokens", "16", "--device", "cpu",
             "--num_workers", "0", "--warmup_steps", "5"]


def write_split(root, split, count, frames, dim, seed):
    """count clips of `frames` frames (an int, or a (low, high) range) of `dim`-d features."""
    rng = np.random.default_rng(seed)
    features = root / "features" / split
    features.mkdir(parents=True)
    lines = ["id\ttext"]
    for i in range(count):
        n = frames if isinstance(frames, int) else int(rng.integers(*frames))
        np.save(features / f"{split}_{i:05d}.npy",
                rng.standard_normal((n, dim)).astype(np.float32))
        lines.append(f"{split}_{i:05d}\t{' '.join(rng.choice(WORDS, 8))}")
    manifest = root / "manifests" / f"{split}.tsv"
    manifest.parent.mkdir(exist_ok=True)
    manifest.write_text("\n".join(lines) + "\n")


def data_flags(root):
    return ["--train_features", root / "features" / "train",
            "--train_manifest", root / "manifests" / "train.tsv",
            "--val_features", root / "features" / "val",
            "--val_manifest", root / "manifests" / "val.tsv"]


# Runs the training script in this process after exec, then prints the peak resident memory of
# that process alone. (A child's ru_maxrss from wait4 would not do: Linux carries the parent's
# peak into a vfork()ed child's, and this parent has held a SONAR-sized encoder.)
PEAK_RSS = ("import runpy, sys\n"
            "sys.argv = sys.argv[1:]\n"
            "try:\n"
            "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "finally:\n"
            "    peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
            "    print('PEAK_RSS_KB', peak.split()[1], flush=True)\n")


def train(root, encoder, cache_dir, out):
    """One training run in a fresh process -> (config.json, first history record, peak RSS MB)."""
    command = [sys.executable, "-c", PEAK_RSS, "train_sonar_with_t5.py",
               *map(str, data_flags(root)), "--sonar_checkpoint", str(encoder),
               "--encoder_cache_dir", str(cache_dir), "--output_dir", str(out), *RUN_FLAGS]
    log = out.parent / f"{out.name}.log"
    with open(log, "w") as f:
        result = subprocess.run(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SystemExit(f"{command} failed; see {log}")
    peak_kb = [line for line in log.read_text().splitlines() if line.startswith("PEAK_RSS_KB")]
    config = json.loads((out / "config.json").read_text())
    history = json.loads((out / "training_history.json").read_text())
    return config, history[0], int(peak_kb[-1].split()[1]) / 1024


def cache_seconds(config):
    return sum(c["seconds"] for c in config["encoder_cache"].values())


def reuse_part(work):
    root = work / "reuse_data"
    write_split(root, "train", 64, (100, 300), 768, seed=0)
    write_split(root, "val", 16, (100, 300), 768, seed=1)
    torch.manual_seed(0)
    config = SonarAslEncoderConfig()
    encoder = SonarAslEncoder(config)
    path = work / "sonar_asl_shape.pt"
    save_checkpoint({"kind": CONVERTED_KIND, "config": asdict(config),
                     "state_dict": encoder.state_dict()}, path)
    params = sum(p.numel() for p in encoder.parameters())
    del encoder
    runs = [train(root, path, work / "cache", work / f"reuse_run{i}") for i in (1, 2)]
    (c1, h1, _), (c2, h2, _) = runs
    same = all(h1[k] == h2[k] for k in ("train_loss", "val_loss", "cond_gap", "val_bleu"))
    r = {"encoder_parameters": params, "clips": 80,
         "build_s": cache_seconds(c1), "reuse_s": cache_seconds(c2),
         "reused": [c["reused"] for c in c2["encoder_cache"].values()],
         "first_epoch_equal": same,
         "first_epoch": {k: (h1[k], h2[k]) for k in ("train_loss", "val_loss", "cond_gap")}}
    r["ratio_reuse_vs_build"] = r["reuse_s"] / r["build_s"]
    print(f"reuse: build {r['build_s']:.1f} s, reuse {r['reuse_s']:.2f} s "
          f"({r['ratio_reuse_vs_build']:.2%}); first epoch equal: {same}", flush=True)
    return r


def ram_part(work, sizes):
    torch.manual_seed(0)
    encoder = work / "feature_encoder.pt"  # 16-d features -> 1024-d token states
    save_feature_encoder(FeatureEncoder(FeatureEncoderConfig(
        input_dim=16, d_model=32, num_layers=1, num_heads=4)), encoder)
    rows = []
    for n in sizes:
        root = work / f"ram_data_{n}"
        write_split(root, "train", n, 300, 16, seed=0)
        write_split(root, "val", 32, 300, 16, seed=1)
        config, _, peak = train(root, encoder, work / "cache", work / f"ram_run{n}")
        cache_bytes = sum(c["bytes"] for c in config["encoder_cache"].values())
        rows.append({"clips": n, "peak_rss_mb": peak, "cache_gb": cache_bytes / 1e9,
                     "build_s": cache_seconds(config)})
        print(f"ram: {n} clips, cache {cache_bytes / 1e9:.2f} GB, peak RSS {peak:.0f} MB",
              flush=True)
    return {"rows": rows, "ratio_peak_rss": rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]}


def key_check_s_per_clip(work, n):
    """Seconds per clip to stat every feature file, as a reuse does (the larger RAM set)."""
    root = work / f"ram_data_{n}"
    dataset = FeatureDataset(root / "manifests" / "train.tsv", root / "features" / "train")
    start = time.time()
    samples_hash(dataset)
    return (time.time() - start) / len(dataset)


def projection(reuse, per_clip_check, results_file):
    """Hours for GRID frozen runs on How2Sign, SONAR-scale encoder, these CPUs."""
    measured = json.loads(Path(results_file).read_text())
    build_h = (measured["cache_build_s"] / (measured["num_train"] + measured["num_val"])
               * HOW2SIGN_CLIPS / 3600)
    run_h = measured["projected_hours"]["frozen_cache"]  # 30 epochs + one build
    # A reuse hashes the weights (a fixed cost, measured in part 1 less its file checks) and
    # checks every clip's file.
    fixed_s = reuse["reuse_s"] - per_clip_check * reuse["clips"]
    reuse_h = (fixed_s + per_clip_check * HOW2SIGN_CLIPS) / 3600
    return {"runs": GRID, "build_hours": build_h, "train_hours_per_run": run_h - build_h,
            "reuse_hours_per_run": reuse_h,
            "without_reuse_hours": GRID * run_h,
            "with_reuse_hours": build_h + GRID * (run_h - build_h) + (GRID - 1) * reuse_h}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs=2, default=[1000, 4000])
    p.add_argument("--sonar_scale_results", default="benchmarks/results_sonar_scale.json")
    p.add_argument("--output", default="benchmarks/encoder_cache_results.json")
    args = p.parse_args(argv)
    start = time.time()
    with tempfile.TemporaryDirectory(prefix="encoder_cache_bench_") as tmp:
        work = Path(tmp)
        result = {"reuse": reuse_part(work), "ram": ram_part(work, args.sizes)}
        result["key_check_s_per_clip"] = key_check_s_per_clip(work, args.sizes[-1])
    result["how2sign_grid"] = projection(result["reuse"], result["key_check_s_per_clip"],
                                         args.sonar_scale_results)
    result["wall_s"] = time.time() - start
    g = result["how2sign_grid"]
    print(f"ram: peak RSS {result['ram']['ratio_peak_rss']:.3f}x for "
          f"{args.sizes[1] / args.sizes[0]:.0f}x the clips\n"
          f"How2Sign, {g['runs']} frozen runs: {g['without_reuse_hours']:.0f} h without reuse, "
          f"{g['with_reuse_hours']:.0f} h with (build {g['build_hours']:.1f} h once, reuse "
          f"{g['reuse_hours_per_run'] * 3600:.0f} s a run)")
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output} ({result['wall_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
