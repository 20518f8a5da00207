"""What decides a cache's contents, hashed into its key: a stale cache is never read."""
import hashlib
import json
import os
from pathlib import Path

import torch

from sonar_t5.common.errors import UserError

FORMAT = 3  # bump when the layout or what a key covers changes (2: per-sample CRC-32;
# 3: the part naming what the bridge reads is resampler_input, as everywhere else)


def weights_hash(model):
    """sha256 of what encode() computes with: the encoder's weights and the feature statistics."""
    tensors = {f"encoder.{k}": v for k, v in model.encoder.state_dict().items()}
    tensors.update(feature_mean=model.feature_mean, feature_std=model.feature_std)
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        digest.update(f"{name} {t.dtype} {tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def samples_hash(dataset):
    """sha256 over every sample's id and feature file (resolved path, size, mtime in ns)."""
    digest = hashlib.sha256()
    for row, path in zip(dataset.rows, dataset.paths):
        try:
            st = os.stat(path)
        except OSError:
            raise UserError("feature file disappeared", str(path)) from None
        digest.update(f"{row.id}\t{Path(path).resolve()}\t{st.st_size}\t{st.st_mtime_ns}\n"
                      .encode())
    return digest.hexdigest()


def cache_key(model, dataset, precision, weights_sha256=None):
    """-> (key, parts): the parts that decide the states' values, and their short hash.
    weights_sha256: weights_hash(model), when the caller has it already."""
    parts = {"format": FORMAT, "encoder_kind": model.config.encoder.get("kind"),
             "weights_sha256": weights_sha256 or weights_hash(model),
             "resampler_input": model.config.resampler_input, "precision": precision,
             "max_frames": dataset.max_frames, "feature_dim": dataset.feature_dim,
             "samples": len(dataset), "samples_sha256": samples_hash(dataset)}
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
    return key, parts
