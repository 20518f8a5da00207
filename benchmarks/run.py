"""Throughput benchmark on How2Sign-shaped synthetic data, side by side in one run.

    python -m benchmarks.run [--device cpu|cuda] [--num_train 64 --num_val 32 --batch_size 8]
                             [--encoder_d_model 512 --encoder_layers 4]

A t5-small-shaped T5 from scratch (32,128-token vocabulary, no download), the original guide's Perceiver,
a 768-d -> encoder_d_model x encoder_layers encoder; features (T, 768) with T drawn from 100-500.
Measures training samples/s (unfrozen; frozen without and with the encoder cache; with fused
AdamW and torch.compile), validation samples/s (one at a time vs batched, greedy and beam 4),
data loading with 0 and 2 workers, the time split of a training epoch, padding waste and peak
memory, and projects the wall time of 30-epoch runs on How2Sign's 31,128 training and 1,741
validation clips from the measured rates. Prints a table and writes JSON; the ratios are what
hold on a noisy machine.
"""
import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sonar_t5.common.device import resolve_device
from sonar_t5.data.dataset import (Collator, FeatureDataset, LengthGroupedBatchSampler, make_loader,
                                   padding_waste)
from sonar_t5.common.precision import autocast, resolve_precision
from sonar_t5.data.dataset import model_inputs
from sonar_t5.data.encoder_cache import cached_loaders
from sonar_t5.evaluation.generation import GenerationSettings, run_evaluation
from sonar_t5.models.build import build_encoder, build_model
from sonar_t5.models.feature_encoder import save_feature_encoder
from sonar_t5.models.t5_decoder import load_t5
from sonar_t5.models.tokenizer import train_tokenizer
from sonar_t5.training.args import build_parser
from sonar_t5.training.defaults import PRETRAINED
from sonar_t5.training.distributed import Dist, Runtime
from sonar_t5.training.engine import StepSettings, evaluate, train_one_epoch
from sonar_t5.training.mfu import FlopsMeter, peak_flops
from sonar_t5.training.optim import OptimizerSettings, build_optimization
from sonar_t5.training.setup import WrapSettings, wrap_for_training
from sonar_t5.training.state import TrainState

WORDS = ("show you how to fold cut paint the paper board brush carefully now we are going "
         "first make sure this is a small large clean wooden").split()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def write_data(root, split, count, seed):
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True)
    lines = ["id\tn_frames\ttext"]
    for i in range(count):
        t = int(rng.integers(100, 501))
        np.save(root / split / f"{split}{i:05d}.npy", rng.standard_normal((t, 768)).astype(np.float16))
        text = " ".join(rng.choice(WORDS, size=int(rng.integers(6, 16))))
        lines.append(f"{split}{i:05d}\t{t}\t{text}")
    (root / f"{split}.tsv").write_text("\n".join(lines) + "\n")


# How2Sign (realigned): training and validation clips; the original guide's run length.
HOW2SIGN_TRAIN, HOW2SIGN_VAL, EPOCHS = 31128, 1741, 30


# Training set-ups side by side: the flags each adds to a run with --sonar_checkpoint.
MODES = {"unfrozen": [], "frozen_no_cache": ["--freeze_encoder", "--no_encoder_cache"],
         "frozen_cache": ["--freeze_encoder"],
         "frozen_cache_fused_adamw": ["--freeze_encoder", "--fused_adamw"],
         "frozen_cache_compile": ["--freeze_encoder", "--compile"]}


def make_args(args, root, *extra):
    """The training flags of a benchmark run: the guide's settings (a pretrained decoder's
    defaults: fresh_model() builds a t5-small-shaped model with the guide's bridge)."""
    run_args = build_parser().parse_args([
        "--train_features", str(root / "train"), "--train_manifest", str(root / "train.tsv"),
        "--val_features", str(root / "val"), "--val_manifest", str(root / "val.tsv"),
        "--output_dir", str(root / "out"), "--batch_size", str(args.batch_size),
        "--num_workers", "0", "--epochs", "2", "--t5_model", "scratch-t5-small",
        "--max_new_tokens", str(args.max_new_tokens), "--num_beams", str(args.val_beams),
        "--resampler_input", "pooled", *extra])  # as fresh_model() builds it
    vars(run_args).update({flag: value for flag, value in PRETRAINED.items()
                           if getattr(run_args, flag) is None})
    return run_args


def fresh_model(tokenizer, encoder):
    torch.manual_seed(0)
    return build_model(t5=load_t5("scratch-t5-small", vocab_size=32128), tokenizer=tokenizer,
                       encoder=encoder, t5_model="scratch-t5-small", resampler_input="pooled")


def train_throughput(args, root, device, precision, tokenizer, encoder, sets, peak, *flags):
    """-> (training samples/s of a steady-state epoch through the real training engine,
    set-up seconds (the encoder cache is built there), validation samples/s as the training
    run measures it at the end of each epoch: losses, generate() at --val_beams, BLEU, and
    the steady epoch's MFU against peak = (FLOP/s, source))."""
    run_args = make_args(args, root, *flags)
    runtime = Runtime(device, precision, Dist())
    model = fresh_model(tokenizer, encoder).to(device)
    collate = Collator(tokenizer)
    train_loader = make_loader(sets[0], collate, args.batch_size, shuffle=True,
                               pin_memory=device.type == "cuda")
    val_loader = make_loader(sets[1], collate, args.batch_size, shuffle=False)
    start = time.time()
    if run_args.freeze_encoder:  # as train_sonar_with_t5.py's main() does
        model.freeze_encoder()
        if not run_args.no_encoder_cache:  # a new cache directory: this measures a build
            cache = dict(cache_dir=tempfile.mkdtemp(dir=root), device=device,
                         precision=precision)
            (train_loader, val_loader), _ = cached_loaders(
                model, {"train": train_loader, "val": val_loader}, **cache)
    setup = time.time() - start
    train_model = wrap_for_training(model, WrapSettings.from_args(run_args), runtime)
    optimization = build_optimization(model, OptimizerSettings.from_args(run_args),
                                      len(train_loader), runtime)
    state, meter = TrainState(), FlopsMeter(*peak)
    train_one_epoch(1, train_model, train_loader, optimization, state,
                    StepSettings.from_args(run_args), runtime, meter)
    state.end_epoch(1, 0.0, 0.0)  # warm-up epoch (allocator, caches, torch.compile)
    sync(device)
    start = time.time()
    train_one_epoch(2, train_model, train_loader, optimization, state,
                    StepSettings.from_args(run_args), runtime, meter)
    sync(device)
    train_rate = len(sets[0]) / (time.time() - start)
    start = time.time()
    evaluate(model, val_loader, tokenizer, GenerationSettings.from_args(run_args), runtime)
    sync(device)
    return train_rate, setup, len(sets[1]) / (time.time() - start), meter.mfu(train_rate)


def projected_hours(train_rate, val_rate, cache_s_per_sample=0.0):
    """Wall time of EPOCHS epochs over How2Sign from measured rates (validation every epoch,
    the encoder cache built once)."""
    epoch = HOW2SIGN_TRAIN / train_rate + HOW2SIGN_VAL / val_rate
    return (EPOCHS * epoch + (HOW2SIGN_TRAIN + HOW2SIGN_VAL) * cache_s_per_sample) / 3600


def validation_throughput(model, tokenizer, dataset, device, precision, batch_size, beams, n):
    """End to end, as validate_perceiver_model.py runs: encoder, bridge, losses, generate()."""
    loader = make_loader(dataset, Collator(tokenizer), batch_size, shuffle=False)
    settings = GenerationSettings(num_beams=beams, max_new_tokens=n)
    sync(device)
    start = time.time()
    run_evaluation(model, loader, tokenizer, device, settings, precision=precision,
                   show_progress=False)
    sync(device)
    return len(dataset) / (time.time() - start)


@torch.no_grad()
def prefixes(model, tokenizer, dataset, device, precision, batch_size):
    """Every sample's T5 prefix, computed once (batched)."""
    loader = make_loader(dataset, Collator(tokenizer), batch_size, shuffle=False)
    out = []
    for batch in loader:
        with autocast(device, precision):
            out.append(model.prefix(**model_inputs(batch, device)))
    return torch.cat(out)


@torch.no_grad()
def generation_throughput(model, prefix, device, precision, batch_size, beams, n):
    """generate() alone, from precomputed prefixes: what batching changes."""
    sync(device)
    start = time.time()
    for i in range(0, len(prefix), batch_size):
        p = prefix[i:i + batch_size]
        with autocast(device, precision):
            model.generate(p, num_beams=beams, max_new_tokens=n, early_stopping=beams > 1)
    sync(device)
    return len(prefix) / (time.time() - start)


def loading_throughput(dataset, tokenizer, batch_size, workers):
    loader = make_loader(dataset, Collator(tokenizer), batch_size, shuffle=True,
                         num_workers=workers)
    start = time.time()
    for _ in loader:
        pass
    return len(dataset) / (time.time() - start)


def time_split(model, loader, device, precision):
    """Seconds per part over one epoch: data wait, encoder, bridge, decoder, backward+optim."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    parts = dict.fromkeys(("data", "encoder", "bridge", "decoder", "backward", "optimizer"), 0.0)
    model.train()

    def tick(name, t0):
        sync(device)
        parts[name] += time.time() - t0
        return time.time()

    t = time.time()
    for batch in loader:
        inputs = model_inputs(batch, device)
        labels = batch["labels"].to(device)
        t = tick("data", t)
        with autocast(device, precision):
            states = model.encode(inputs["inputs"], inputs["input_mask"])
            t = tick("encoder", t)
            prefix = model.prefix(*states, encoded=True)
            t = tick("bridge", t)
            loss = model.decoder_loss(prefix, labels)
            t = tick("decoder", t)
        loss.backward()
        t = tick("backward", t)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t = tick("optimizer", t)
    total = sum(parts.values())
    return {k: round(v / total, 3) for k, v in parts.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto")
    p.add_argument("--num_train", type=int, default=64)
    p.add_argument("--num_val", type=int, default=32)
    p.add_argument("--num_generate", type=int, default=64,
                   help="samples for the generation-only comparison (the issue asks 1,000)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--val_beams", type=int, default=4,
                   help="beam size of the per-epoch validation in the training runs (the "
                        "training default)")
    p.add_argument("--encoder_d_model", type=int, default=512,
                   help="encoder width (512 x 4 = what train_sonar_with_t5.py builds without "
                        "--sonar_checkpoint; ssvp_slt's SONAR ASL encoder, a t5-v1_1-large "
                        "encoder, is 1024 x 24)")
    p.add_argument("--encoder_layers", type=int, default=4)
    p.add_argument("--train_modes", nargs="+", choices=list(MODES), default=list(MODES),
                   help="training set-ups to measure (default: all; an unfrozen SONAR-scale "
                        "encoder needs more than 24 GB of RAM at batch 8)")
    p.add_argument("--output", default="benchmarks/results.json")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    root = Path(tempfile.mkdtemp(prefix="sonar_t5_bench_"))
    write_data(root, "train", args.num_train, 1)
    write_data(root, "val", args.num_val, 2)
    sets = (FeatureDataset(root / "train.tsv", root / "train"),
            FeatureDataset(root / "val.tsv", root / "val"))
    tokenizer = train_tokenizer(sets[0].texts, vocab_size=60)
    torch.manual_seed(0)
    encoder = build_encoder(None, 768, d_model=args.encoder_d_model, num_layers=args.encoder_layers,
                            num_heads=max(1, args.encoder_d_model // 64))
    save_feature_encoder(encoder, root / "sonar.pt")
    r = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
         f"cpu ({torch.get_num_threads()} threads)", "precision": precision,
         "num_train": args.num_train, "num_val": args.num_val, "batch_size": args.batch_size,
         "val_beams": args.val_beams, "encoder": f"{args.encoder_d_model} x {args.encoder_layers}",
         "encoder_params": sum(p.numel() for p in encoder.parameters())}

    lengths = sets[0].lengths
    grouped = list(LengthGroupedBatchSampler(lengths, args.batch_size, seed=0))
    random_order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [random_order[i:i + args.batch_size] for i in range(0, len(lengths), args.batch_size)]
    r["padding_waste_grouped"] = padding_waste(lengths, grouped)
    r["padding_waste_random"] = padding_waste(lengths, random_batches)

    for workers in (0, 2):
        r[f"loading_samples_per_s_{workers}_workers"] = loading_throughput(
            sets[0], tokenizer, args.batch_size, workers)

    sonar = ["--sonar_checkpoint", str(root / "sonar.pt")]
    peak = peak_flops(device, precision)  # MFU's denominator, as a training run measures it
    r["peak_gflops"], r["peak_source"] = peak[0] / 1e9, peak[1]
    r["projected_hours"] = {}
    for mode in args.train_modes:
        r[f"train_{mode}"], setup, r[f"val_in_training_{mode}"], r[f"mfu_{mode}"] = \
            train_throughput(args, root, device, precision, tokenizer, encoder, sets, peak,
                             *sonar, *MODES[mode])
        cache_per_sample = 0.0
        if mode.startswith("frozen_cache"):  # its set-up is the one-off encoder pass
            cache_per_sample = setup / (args.num_train + args.num_val)
        if mode == "frozen_cache":
            r["cache_build_s"] = setup
        r["projected_hours"][mode] = projected_hours(
            r[f"train_{mode}"], r[f"val_in_training_{mode}"], cache_per_sample)

    model = fresh_model(tokenizer, encoder).to(device).eval()
    eval_batch = args.batch_size * 4
    for beams in (1, 4):
        r[f"val_one_at_a_time_beam{beams}"] = validation_throughput(
            model, tokenizer, sets[1], device, precision, 1, beams, args.max_new_tokens)
        r[f"val_batched_beam{beams}"] = validation_throughput(
            model, tokenizer, sets[1], device, precision, eval_batch, beams,
            args.max_new_tokens)
    prefix = prefixes(model, tokenizer, sets[1], device, precision, eval_batch)
    repeats = -(-args.num_generate // len(prefix))
    prefix = prefix.repeat(repeats, 1, 1)[:args.num_generate]  # distinct enough: a benchmark
    r["num_generate"] = len(prefix)
    for beams in (1, 4):
        for name, size in (("one_at_a_time", 1), ("batched", eval_batch)):
            r[f"generate_{name}_beam{beams}"] = generation_throughput(
                model, prefix, device, precision, size, beams, args.max_new_tokens)
    if "unfrozen" in args.train_modes:
        r["time_split_unfrozen"] = time_split(
            fresh_model(tokenizer, encoder).to(device), make_loader(
                sets[0], Collator(tokenizer), args.batch_size, shuffle=True), device, precision)
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        r["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    if {"frozen_cache", "frozen_no_cache"} <= set(args.train_modes):
        r["ratio_frozen_cache_vs_no_cache"] = (r["train_frozen_cache"]
                                               / r["train_frozen_no_cache"])
    for beams in (1, 4):
        r[f"ratio_val_batched_vs_one_beam{beams}"] = (r[f"val_batched_beam{beams}"]
                                                      / r[f"val_one_at_a_time_beam{beams}"])
        r[f"ratio_generate_batched_vs_one_beam{beams}"] = (
            r[f"generate_batched_beam{beams}"] / r[f"generate_one_at_a_time_beam{beams}"])
    report(r)
    Path(args.output).write_text(json.dumps(r, indent=2) + "\n")
    print(f"wrote {args.output}")


def report(r):
    rows = [("training samples/s, unfrozen", "train_unfrozen"),
            ("training samples/s, frozen, no cache", "train_frozen_no_cache"),
            ("training samples/s, frozen, cache", "train_frozen_cache"),
            ("  (one-off cache build, s)", "cache_build_s"),
            ("training samples/s, frozen, cache, fused AdamW", "train_frozen_cache_fused_adamw"),
            ("training samples/s, frozen, cache, torch.compile",
             "train_frozen_cache_compile"),
            ("peak GFLOP/s (MFU's denominator)", "peak_gflops"),
            ("MFU, unfrozen", "mfu_unfrozen"), ("MFU, frozen, no cache", "mfu_frozen_no_cache"),
            ("MFU, frozen, cache", "mfu_frozen_cache"),
            (f"per-epoch validation samples/s (beam {r['val_beams']}), unfrozen",
             "val_in_training_unfrozen"),
            ("per-epoch validation samples/s, frozen, no cache",
             "val_in_training_frozen_no_cache"),
            ("per-epoch validation samples/s, frozen, cache", "val_in_training_frozen_cache"),
            ("validation samples/s end to end, one at a time, greedy", "val_one_at_a_time_beam1"),
            ("validation samples/s end to end, batched, greedy", "val_batched_beam1"),
            ("validation samples/s end to end, one at a time, beam 4", "val_one_at_a_time_beam4"),
            ("validation samples/s end to end, batched, beam 4", "val_batched_beam4"),
            (f"generate() samples/s ({r['num_generate']}), one at a time, greedy",
             "generate_one_at_a_time_beam1"),
            ("generate() samples/s, batched, greedy", "generate_batched_beam1"),
            ("generate() samples/s, one at a time, beam 4", "generate_one_at_a_time_beam4"),
            ("generate() samples/s, batched, beam 4", "generate_batched_beam4"),
            ("data loading samples/s, 0 workers", "loading_samples_per_s_0_workers"),
            ("data loading samples/s, 2 workers", "loading_samples_per_s_2_workers"),
            ("padding waste, length-grouped", "padding_waste_grouped"),
            ("padding waste, random batches", "padding_waste_random"),
            ("peak RSS, MB", "peak_rss_mb"),
            ("ratio frozen cache / no cache", "ratio_frozen_cache_vs_no_cache"),
            ("ratio end to end batched / one, greedy", "ratio_val_batched_vs_one_beam1"),
            ("ratio end to end batched / one, beam 4", "ratio_val_batched_vs_one_beam4"),
            ("ratio generate() batched / one, greedy", "ratio_generate_batched_vs_one_beam1"),
            ("ratio generate() batched / one, beam 4", "ratio_generate_batched_vs_one_beam4")]
    print(f"\n{r['device']}, {r['precision']}, batch {r['batch_size']}, encoder {r['encoder']} "
          f"({r['encoder_params'] / 1e6:.1f}M parameters)")
    for name, key in rows:
        if r.get(key) is not None:
            print(f"  {name:<58} {r[key]:10.3f}")
    if "time_split_unfrozen" in r:
        print("  time split of an unfrozen epoch: " + ", ".join(
            f"{k} {v:.0%}" for k, v in r["time_split_unfrozen"].items()))
    print(f"  projected {EPOCHS} epochs on How2Sign ({HOW2SIGN_TRAIN:,} train, {HOW2SIGN_VAL:,} "
          "val clips), hours: " + ", ".join(
              f"{mode} {hours:.1f}" for mode, hours in r["projected_hours"].items()))


if __name__ == "__main__":
    main()
