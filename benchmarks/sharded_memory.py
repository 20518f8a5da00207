"""Memory per process of unfrozen training with the SONAR-ASL-shaped encoder: one process,
then two under torchrun with DDP (each holds everything) and with --sharding fsdp (FSDP2:
each holds half of the weights, gradients and AdamW's state).

    python -m benchmarks.sharded_memory          # 752M encoder, batch 4 per process, CPU/gloo

Each row is a fresh job (a peak is per process): the toolkit's own training set-up
(training.setup.wrap_for_training: DDP or FSDP2 as --sharding says) and two optimizer steps
through forward, backward, clipping and AdamW. Per process it records the training state it
holds (weights, gradients and AdamW's moments: the bytes of its own tensors or shards,
counted) and its peak memory: torch.cuda.max_memory_allocated on a GPU, the peak resident
set (RSS) on a CPU. Two DDP processes of the full 752M model on one CPU machine need about
twice 13 GiB; where it has less (--memory_gb), the DDP row is measured on the same encoder at
--small_layers depth, with FSDP beside it, so each comparison is like for like. On GPUs each
process has its own (two are needed).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from sonar_t5.common.precision import autocast
from sonar_t5.models.build import build_model, load_t5_and_tokenizer
from sonar_t5.models.sonar_asl_encoder import SonarAslEncoder, SonarAslEncoderConfig
from sonar_t5.training.distributed import Runtime, init_distributed
from sonar_t5.training.optim import build_optimizer
from sonar_t5.training.setup import WrapSettings, wrap_for_training
from sonar_t5.training.sharding import shard

TEXTS = ["i'm going to show you how to fold the paper carefully",
         "now we are going to cut the edges with the small scissors"] * 20
GB = 2**30  # the figures are GiB


def tensor_bytes(tensor):
    """The bytes this process holds of a tensor (a DTensor: its own shard)."""
    local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return local.numel() * local.element_size()


def training_state_gb(model, optimizer):
    """Weights, gradients and optimizer state held by this process (each tied weight once)."""
    params = list(model.parameters())
    moments = [v for s in optimizer.state.values() for v in s.values()
               if torch.is_tensor(v) and v.dim() > 0]
    return sum(map(tensor_bytes, params + [p.grad for p in params if p.grad is not None]
                   + moments)) / GB


def peak_gb(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB  # Linux: kB


def measure(sharding, layers, batch_size, frames, steps, checkpointing, frozen):
    """One process of one row (under torchrun or alone): -> dict of figures. sharding: ddp,
    fsdp (a frozen encoder left whole on each process, as training does), or
    fsdp_frozen_sharded (the frozen encoder sharded too)."""
    dist, device = init_distributed("auto")
    torch.manual_seed(0)
    encoder = SonarAslEncoder(SonarAslEncoderConfig(num_layers=layers,
                                                    num_decoder_layers=layers))
    t5, tokenizer = load_t5_and_tokenizer("t5-tiny", TEXTS, vocab_size=64)
    model = build_model(t5=t5, tokenizer=tokenizer, encoder=encoder, t5_model="t5-tiny",
                        resampler_input="pooled").to(device).train()
    if frozen:  # run at every step, as with --no_encoder_cache
        model.freeze_encoder()
    parameters = sum(p.numel() for p in model.parameters())
    wrapping = WrapSettings(gradient_checkpointing=checkpointing, sharding=sharding,
                            resampler_input="pooled", freeze_encoder=frozen, compile=False)
    if sharding == "fsdp_frozen_sharded" and dist.enabled:
        if checkpointing:
            model.gradient_checkpointing_enable()
        train_model = shard(model, "fp32", shard_frozen_encoder=True)
    else:
        train_model = wrap_for_training(model, wrapping, Runtime(device, "fp32", dist))
    optimizer = build_optimizer(model, 1e-4)
    torch.manual_seed(1 + dist.rank)
    features = torch.randn(batch_size, frames, encoder.config.input_dim, device=device)
    mask = torch.ones(batch_size, frames, dtype=torch.bool, device=device)
    labels = torch.tensor([tokenizer.encode(TEXTS[0])] * batch_size, device=device)
    start = time.time()
    for _ in range(steps):
        with autocast(device, "fp32"):
            loss = train_model(features, mask, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(model.parameters()), 1.0)
        optimizer.step()
        state_gb = training_state_gb(model, optimizer)  # gradients still there
        optimizer.zero_grad(set_to_none=True)
    return {"sharding": sharding if dist.enabled else "one process",
            "processes": dist.world_size, "rank": dist.rank, "encoder_layers": layers,
            "parameters": parameters, "batch_size": batch_size, "frames": frames,
            "gradient_checkpointing": checkpointing, "frozen_encoder": frozen,
            "device": device.type,
            "training_state_gb": state_gb, "peak_gb": peak_gb(device),
            "s_per_step": (time.time() - start) / steps, "loss": loss.item()}


def run_row(processes, sharding, layers, args):
    """One row as a fresh job: -> the figures of its process with the highest peak."""
    one = ["-m", "benchmarks.sharded_memory", "--one", sharding, str(layers), "--batch_size",
           str(args.batch_size), "--frames", str(args.frames), "--steps", str(args.steps)]
    one += ["--gradient_checkpointing"] * args.gradient_checkpointing
    one += ["--freeze_encoder"] * args.freeze_encoder
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                 str(processes)] if processes > 1 else [sys.executable])
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}
    out = subprocess.run(launcher + one, capture_output=True, text=True, env=env,
                         cwd=Path(__file__).resolve().parents[1])
    if out.returncode:
        raise SystemExit(f"row ({processes} x {sharding}, {layers} layers) failed:\n"
                         + out.stderr[-3000:])
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    return max(rows, key=lambda r: r["peak_gb"])


GPU_16GB = 16e9 / GB  # a 16 GB GPU (a T4, a V100-16GB) in GiB, the unit of every figure here


def projection(full_rows, gpus=(1, 2, 4), gpu_gb=GPU_16GB):
    """Per-GPU memory for 1, 2 and 4 GPUs, from the measured full-size rows: the training
    state (all of it under DDP, 1/N under FSDP) plus what a process holds besides (the
    activations of its batch, the gathered units and buffers: its peak minus its state)."""
    one = full_rows["one process"]
    fsdp = full_rows.get("fsdp")
    other_ddp = one["peak_gb"] - one["training_state_gb"]
    table = []
    for n in gpus:
        ddp_gb = one["peak_gb"]  # every process holds what one process holds
        row = {"gpus": n, "ddp_gb": ddp_gb, "ddp_fits": ddp_gb <= gpu_gb}
        if fsdp:
            other = fsdp["peak_gb"] - fsdp["training_state_gb"] if n > 1 else other_ddp
            fsdp_gb = one["training_state_gb"] / n + other
            row.update(fsdp_gb=fsdp_gb, fsdp_fits=fsdp_gb <= gpu_gb)
        table.append(row)
    return table


def memory_gb():
    if torch.cuda.is_available():
        return torch.cuda.get_device_properties(0).total_memory / GB
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=24, help="encoder layers (24 + 24: SONAR ASL)")
    p.add_argument("--small_layers", type=int, default=8,
                   help="the depth where two DDP processes fit this machine")
    p.add_argument("--batch_size", type=int, default=4, help="per process")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--gradient_checkpointing", action="store_true")
    p.add_argument("--freeze_encoder", action="store_true",
                   help="the encoder frozen and run at each step (as --no_encoder_cache): "
                        "one process, DDP, FSDP with the encoder whole and with it sharded")
    p.add_argument("--memory_gb", type=float, default=memory_gb(),
                   help="what a process may use: a GPU's memory, or the machine's (which "
                        "the processes share) on a CPU")
    p.add_argument("--one", nargs=2, metavar=("SHARDING", "LAYERS"), help=argparse.SUPPRESS)
    p.add_argument("--output", default=None,
                   help="default: benchmarks/sharded_memory[_frozen]_results.json")
    args = p.parse_args(argv)
    if args.one:
        row = measure(args.one[0], int(args.one[1]), args.batch_size, args.frames, args.steps,
                      args.gradient_checkpointing, args.freeze_encoder)
        print(json.dumps(row), flush=True)
        return
    output = Path(args.output or "benchmarks/sharded_memory"
                  f"{'_frozen' * args.freeze_encoder}_results.json")
    rows = []

    def run(processes, sharding, layers):
        rows.append(run_row(processes, sharding, layers, args))
        r = rows[-1]
        print(f"{r['encoder_layers']} + {r['encoder_layers']} layers "
              f"({r['parameters'] / 1e6:.0f}M), {r['processes']} x {r['sharding']}: training "
              f"state {r['training_state_gb']:.2f} GB, peak {r['peak_gb']:.2f} GB per process, "
              f"{r['s_per_step']:.1f} s/step", flush=True)
        return r

    if args.freeze_encoder:  # the frozen encoder: whole (what training does) or sharded
        for processes, sharding in ((1, "ddp"), (2, "ddp"), (2, "fsdp"),
                                    (2, "fsdp_frozen_sharded")):
            run(processes, sharding, args.layers)
        output.write_text(json.dumps({"encoder": "t5-v1_1-large shape (SONAR ASL), frozen, "
                                      "run at each step", "rows": rows}, indent=2) + "\n")
        print(f"wrote {output}")
        return
    full = {"one process": run(1, "ddp", args.layers)}
    sharing = 1 if torch.cuda.is_available() else 2  # processes in one memory
    ddp_fits = sharing * full["one process"]["peak_gb"] * 1.1 < args.memory_gb
    if ddp_fits:
        full["ddp"] = run(2, "ddp", args.layers)
    full["fsdp"] = run(2, "fsdp", args.layers)
    small = {}
    if not ddp_fits:  # DDP like for like, where two full copies fit
        small = {"one process": run(1, "ddp", args.small_layers),
                 "ddp": run(2, "ddp", args.small_layers),
                 "fsdp": run(2, "fsdp", args.small_layers)}
    ddp_state = full["one process"]["training_state_gb"]  # DDP: a whole copy per process
    ratio = full["fsdp"]["training_state_gb"] / ddp_state
    print(f"2-process FSDP training state per process: {ratio:.0%} of DDP's (target: 55% or "
          "less)")
    result = {"encoder": "t5-v1_1-large shape (SONAR ASL), unfrozen, random weights",
              "machine_memory_gb": args.memory_gb, "rows": rows,
              "two_ddp_processes_fit_full_size": ddp_fits,
              "fsdp_state_vs_ddp": ratio, "projection_16gb": projection(full)}
    if small:
        result["small_fsdp_state_vs_ddp"] = (small["fsdp"]["training_state_gb"]
                                             / small["ddp"]["training_state_gb"])
        result["small_fsdp_peak_vs_ddp"] = small["fsdp"]["peak_gb"] / small["ddp"]["peak_gb"]
    for r in result["projection_16gb"]:
        print(f"{r['gpus']} x 16 GB: DDP {r['ddp_gb']:.1f} GB per GPU, "
              f"FSDP {r.get('fsdp_gb', float('nan')):.1f} GB per GPU")
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
