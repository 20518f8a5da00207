"""Throughput benchmark on How2Sign-shaped synthetic data, side by side in one run.

    python -m benchmarks.run [--device cpu|cuda] [--num_train 64 --num_val 32 --batch_size 8]

A t5-small-shaped T5 from scratch (32,128-token vocabulary, no download), the seed's Perceiver,
a 768-d -> 512 x 4-layer encoder; features (T, 768) with T drawn from 100-500. Measures training
samples/s (unfrozen; frozen without and with the encoder cache), validation samples/s (one at a
time vs batched, greedy and beam 4), data loading with 0 and 2 workers, the time split of a
training epoch, padding waste and peak memory. Prints a table and writes JSON; the ratios are
what hold on a noisy machine.
"""
import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common.device import resolve_device
from data.dataset import Collator, FeatureDataset, LengthGroupedBatchSampler, make_loader, padding_waste
from evaluation.generation import GenerationSettings, run_evaluation, to_device
from models.build import build_encoder, build_model
from models.sonar_encoder import save_sonar_checkpoint
from models.t5_decoder import load_t5
from models.tokenizer import train_tokenizer
from train_sonar_with_t5 import build_parser
from training.distributed import Dist
from training.precision import autocast, resolve_precision
from training.trainer import Trainer

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


def make_args(args, root, *extra):
    return build_parser().parse_args([
        "--train_features", str(root / "train"), "--train_manifest", str(root / "train.tsv"),
        "--val_features", str(root / "val"), "--val_manifest", str(root / "val.tsv"),
        "--output_dir", str(root / "out"), "--batch_size", str(args.batch_size),
        "--num_workers", "0", "--epochs", "2", "--t5_model", "scratch-t5-small",
        "--max_new_tokens", str(args.max_new_tokens), *extra])


def fresh_model(tokenizer, encoder):
    torch.manual_seed(0)
    return build_model(t5=load_t5("scratch-t5-small", vocab_size=32128), tokenizer=tokenizer,
                       encoder=encoder, t5_model="scratch-t5-small")


def train_throughput(args, root, device, precision, tokenizer, encoder, sets, *flags):
    """Samples/s of a steady-state training epoch through the real Trainer."""
    run_args = make_args(args, root, *flags)
    model = fresh_model(tokenizer, encoder)
    collate = Collator(tokenizer)
    loaders = (make_loader(sets[0], collate, args.batch_size, shuffle=True,
                           pin_memory=device.type == "cuda"),
               make_loader(sets[1], collate, args.batch_size, shuffle=False), collate)
    start = time.time()
    trainer = Trainer(run_args, model, tokenizer, loaders, device, Dist(), precision,
                      GenerationSettings(num_beams=1, max_new_tokens=args.max_new_tokens))
    setup = time.time() - start
    trainer.train_one_epoch(1)  # warm-up epoch (allocator, caches)
    trainer.state.update(batches_done=0, partial_loss=[0.0, 0.0])  # as run_epoch() does
    sync(device)
    start = time.time()
    trainer.train_one_epoch(2)
    sync(device)
    return len(sets[0]) / (time.time() - start), setup


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
            out.append(model.prefix(*model.encode(**to_device(batch, device)))[0])
    return torch.cat(out)


@torch.no_grad()
def generation_throughput(model, prefix, device, precision, batch_size, beams, n):
    """generate() alone, from precomputed prefixes: what batching changes."""
    sync(device)
    start = time.time()
    for i in range(0, len(prefix), batch_size):
        p = prefix[i:i + batch_size]
        with autocast(device, precision):
            model.generate(p, torch.ones(p.shape[:2], dtype=torch.long, device=device),
                           num_beams=beams, max_new_tokens=n, early_stopping=beams > 1)
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
        inputs = to_device(batch, device)
        labels = batch["labels"].to(device)
        t = tick("data", t)
        with autocast(device, precision):
            states = model.encode(**inputs)
            t = tick("encoder", t)
            prefix = model.prefix(*states)
            t = tick("bridge", t)
            loss = model.decoder_loss(*prefix, labels)
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
    encoder = build_encoder(None, 768)
    save_sonar_checkpoint(encoder, root / "sonar.pt")
    r = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else
         f"cpu ({torch.get_num_threads()} threads)", "precision": precision,
         "num_train": args.num_train, "num_val": args.num_val, "batch_size": args.batch_size}

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
    r["train_unfrozen"], _ = train_throughput(args, root, device, precision, tokenizer, encoder,
                                              sets, *sonar)
    r["train_frozen_no_cache"], _ = train_throughput(
        args, root, device, precision, tokenizer, encoder, sets, *sonar, "--freeze_encoder",
        "--no_encoder_cache")
    r["train_frozen_cache"], r["cache_build_s"] = train_throughput(
        args, root, device, precision, tokenizer, encoder, sets, *sonar, "--freeze_encoder")

    r["train_frozen_cache_fused_adamw"], _ = train_throughput(
        args, root, device, precision, tokenizer, encoder, sets, *sonar, "--freeze_encoder",
        "--fused_adamw")

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
    r["time_split_unfrozen"] = time_split(
        fresh_model(tokenizer, encoder).to(device), make_loader(
            sets[0], Collator(tokenizer), args.batch_size, shuffle=True), device, precision)
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        r["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    r["ratio_frozen_cache_vs_no_cache"] = r["train_frozen_cache"] / r["train_frozen_no_cache"]
    for beams in (1, 4):
        r[f"ratio_val_batched_vs_one_beam{beams}"] = (r[f"val_batched_beam{beams}"]
                                                      / r[f"val_one_at_a_time_beam{beams}"])
        r[f"ratio_generate_batched_vs_one_beam{beams}"] = (
            r[f"generate_batched_beam{beams}"] / r[f"generate_one_at_a_time_beam{beams}"])
    report(r)
    Path(args.output).write_text(json.dumps(r, indent=2) + "\n")
    print(f"wrote {args.output}")


def report(r):
    rows = [("training samples/s, unfrozen", r["train_unfrozen"]),
            ("training samples/s, frozen, no cache", r["train_frozen_no_cache"]),
            ("training samples/s, frozen, cache", r["train_frozen_cache"]),
            ("  (one-off cache build, s)", r["cache_build_s"]),
            ("training samples/s, frozen, cache, fused AdamW", r["train_frozen_cache_fused_adamw"]),
            ("validation samples/s end to end, one at a time, greedy", r["val_one_at_a_time_beam1"]),
            ("validation samples/s end to end, batched, greedy", r["val_batched_beam1"]),
            ("validation samples/s end to end, one at a time, beam 4", r["val_one_at_a_time_beam4"]),
            ("validation samples/s end to end, batched, beam 4", r["val_batched_beam4"]),
            (f"generate() samples/s ({r['num_generate']}), one at a time, greedy",
             r["generate_one_at_a_time_beam1"]),
            ("generate() samples/s, batched, greedy", r["generate_batched_beam1"]),
            ("generate() samples/s, one at a time, beam 4", r["generate_one_at_a_time_beam4"]),
            ("generate() samples/s, batched, beam 4", r["generate_batched_beam4"]),
            ("data loading samples/s, 0 workers", r["loading_samples_per_s_0_workers"]),
            ("data loading samples/s, 2 workers", r["loading_samples_per_s_2_workers"]),
            ("padding waste, length-grouped", r["padding_waste_grouped"]),
            ("padding waste, random batches", r["padding_waste_random"]),
            ("peak RSS, MB", r["peak_rss_mb"]),
            ("ratio frozen cache / no cache", r["ratio_frozen_cache_vs_no_cache"]),
            ("ratio end to end batched / one, greedy", r["ratio_val_batched_vs_one_beam1"]),
            ("ratio end to end batched / one, beam 4", r["ratio_val_batched_vs_one_beam4"]),
            ("ratio generate() batched / one, greedy", r["ratio_generate_batched_vs_one_beam1"]),
            ("ratio generate() batched / one, beam 4", r["ratio_generate_batched_vs_one_beam4"])]
    print(f"\n{r['device']}, {r['precision']}, batch {r['batch_size']}")
    for name, value in rows:
        print(f"  {name:<58} {value:10.3f}")
    print("  time split of an unfrozen epoch: " + ", ".join(
        f"{k} {v:.0%}" for k, v in r["time_split_unfrozen"].items()))


if __name__ == "__main__":
    main()
