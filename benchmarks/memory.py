"""Peak memory over two passes of a large feature set: files are read lazily, nothing piles up.

    python -m benchmarks.memory [--num_samples 2000 --frames 300 --dim 768 --workdir DIR]
"""
import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sonar_t5.data.dataset import Collator, FeatureDataset, make_loader
from sonar_t5.models.tokenizer import train_tokenizer


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def write_data(root, num_samples, frames, dim):
    (root / "features").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((frames, dim)).astype(np.float16)
    lines = ["id\tn_frames\ttext"]
    for i in range(num_samples):
        np.save(root / "features" / f"s{i:05d}.npy", x + np.float16(i % 7))
        lines.append(f"s{i:05d}\t{frames}\tsample number {i} of the memory benchmark")
    (root / "manifest.tsv").write_text("\n".join(lines) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num_samples", type=int, default=2000)
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--workdir", default=None)
    p.add_argument("--output", default="benchmarks/memory_results.json")
    args = p.parse_args(argv)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="sonar_t5_memory_"))
    if not (root / "manifest.tsv").is_file():
        write_data(root, args.num_samples, args.frames, args.dim)
    on_disk = sum(f.stat().st_size for f in (root / "features").iterdir()) / 2**30
    dataset = FeatureDataset(root / "manifest.tsv", root / "features")
    tokenizer = train_tokenizer(dataset.texts, vocab_size=100)
    loader = make_loader(dataset, Collator(tokenizer), args.batch_size, shuffle=True)
    start_rss, start = peak_rss_mb(), time.time()
    frames = 0
    for epoch in range(2):
        loader.batch_sampler.set_epoch(epoch)
        for batch in loader:
            frames += int(batch["input_mask"].sum())
    result = {"samples": len(dataset), "passes": 2, "data_on_disk_gb": round(on_disk, 3),
              "frames_read": frames, "peak_rss_mb_before": round(start_rss, 1),
              "peak_rss_mb": round(peak_rss_mb(), 1), "seconds": round(time.time() - start, 1),
              "torch": torch.__version__}
    print(json.dumps(result, indent=2))
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
