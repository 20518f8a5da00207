"""Peak memory of unfrozen training with a SONAR-ASL-sized encoder, with and without
--gradient_checkpointing, at two batch sizes: the per-sample slope, and what fits where.

    python -m benchmarks.encoder_memory            # t5-v1_1-large shape, 300 frames, CPU

The encoder has the shape of ssvp_slt's SONAR ASL encoder (t5-v1_1-large: d_model 1024,
24 + 24 layers, 16 heads, d_ff 2816, gated-gelu; random weights), the rest of the model is the
toolkit's default Perceiver and a t5-tiny decoder, the input 300 frames of 768-d features.
Each configuration runs in a fresh process (peak RSS is per process): two optimizer steps
through SonarT5.forward, backward, clipping and AdamW, so the peak holds weights, gradients,
both Adam moments and one step's activations.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from sonar_t5.common.precision import autocast
from sonar_t5.models.build import build_model, load_t5_and_tokenizer
from sonar_t5.models.sonar_asl_encoder import SonarAslEncoder, SonarAslEncoderConfig
from sonar_t5.training.optim import build_optimizer

TEXTS = ["i'm going to show you how to fold the paper carefully",
         "now we are going to cut the edges with the small scissors"] * 20
GB = 2**30


def rss_gb():
    """Peak resident memory of this process so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB


def current_rss_gb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / GB


def measure(batch_size, checkpointing, precision, frames, steps):
    """One configuration, in this process: -> dict of figures."""
    torch.manual_seed(0)
    encoder = SonarAslEncoder(SonarAslEncoderConfig())  # t5-v1_1-large shape, random weights
    t5, tokenizer = load_t5_and_tokenizer("t5-tiny", TEXTS, vocab_size=64)
    model = build_model(t5=t5, tokenizer=tokenizer, encoder=encoder, t5_model="t5-tiny",
                        resampler_input="pooled").train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    optimizer = build_optimizer(model, 1e-4)
    params = sum(p.numel() for p in model.parameters())
    features = torch.randn(batch_size, frames, encoder.config.input_dim)
    mask = torch.ones(batch_size, frames, dtype=torch.bool)
    labels = torch.tensor([tokenizer.encode(TEXTS[0])] * batch_size)
    setup_gb = current_rss_gb()
    start = time.time()
    for _ in range(steps):
        with autocast(torch.device("cpu"), precision):
            loss = model(features, mask, labels)
        loss.backward()
        loss = loss.detach()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {"batch_size": batch_size, "gradient_checkpointing": checkpointing,
            "precision": precision, "frames": frames, "parameters": params,
            "setup_rss_gb": setup_gb, "peak_rss_gb": rss_gb(),
            "s_per_step": (time.time() - start) / steps, "loss": loss.item()}


def run_one(config, frames, steps):
    """Measure `config` in a fresh interpreter, so its peak is its own."""
    batch, checkpointing, precision = config
    command = [sys.executable, "-m", "benchmarks.encoder_memory", "--one", str(batch),
               str(int(checkpointing)), precision, "--frames", str(frames), "--steps", str(steps)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def slopes(rows):
    """GB per extra sample, per (checkpointing, precision), from the two batch sizes."""
    out = {}
    for (ckpt, precision) in {(r["gradient_checkpointing"], r["precision"]) for r in rows}:
        pair = sorted((r for r in rows if (r["gradient_checkpointing"], r["precision"])
                       == (ckpt, precision)), key=lambda r: r["batch_size"])
        if len(pair) == 2:
            a, b = pair
            slope = (b["peak_rss_gb"] - a["peak_rss_gb"]) / (b["batch_size"] - a["batch_size"])
            name = f"{precision}{', gradient checkpointing' if ckpt else ''}"
            out[name] = {"gb_per_sample": slope,
                         "fixed_gb": a["peak_rss_gb"] - slope * a["batch_size"]}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch_sizes", type=int, nargs=2, default=[2, 4])
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                   help="bf16: CPU autocast, what a bf16 GPU run keeps in half precision")
    p.add_argument("--one", nargs=3, metavar=("BATCH", "CHECKPOINTING", "PRECISION"),
                   help=argparse.SUPPRESS)
    p.add_argument("--output", default="benchmarks/encoder_memory_results.json")
    args = p.parse_args(argv)
    if args.one:
        batch, checkpointing, precision = int(args.one[0]), bool(int(args.one[1])), args.one[2]
        print(json.dumps(measure(batch, checkpointing, precision, args.frames, args.steps)))
        return
    configs = [(b, ckpt, precision) for precision in args.precisions for ckpt in (False, True)
               for b in args.batch_sizes]
    rows = []
    for config in configs:
        rows.append(run_one(config, args.frames, args.steps))
        r = rows[-1]
        print(f"batch {r['batch_size']}, {r['precision']}, checkpointing "
              f"{'on ' if r['gradient_checkpointing'] else 'off'}: peak {r['peak_rss_gb']:.2f} GB "
              f"(after set-up {r['setup_rss_gb']:.2f} GB), {r['s_per_step']:.1f} s/step",
              flush=True)
    result = {"encoder": "t5-v1_1-large shape (SONAR ASL)", "frames": args.frames,
              "parameters": rows[0]["parameters"], "rows": rows, "slopes": slopes(rows)}
    for name, s in result["slopes"].items():
        print(f"{name}: {s['gb_per_sample']:.3f} GB per sample over a fixed {s['fixed_gb']:.2f} GB")
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
