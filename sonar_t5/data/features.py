"""Feature files: <dir>/<id>.npy|.pt|.npz, or ssvp_slt's <dir>/<id[:5]>/<id>.pt.

(T, D) is a sequence of T frames; (D,) or (1, D) one pre-pooled embedding. Always float32 out.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from sonar_t5.common.errors import UserError

def candidate_paths(features_dir, sample_id):
    root = Path(features_dir)
    for ext in EXTENSIONS:
        yield root / f"{sample_id}{ext}"
    # ssvp_slt: <dir>/<id[:5]>/<id>.pt, where its manifests may name the video (<id>.mp4)
    for name in dict.fromkeys((sample_id, os.path.splitext(sample_id)[0])):
        for ext in EXTENSIONS:
            yield root / sample_id[:5] / f"{name}{ext}"


def find_feature_file(features_dir, sample_id, explicit=None, where=None):
    """The file for one sample, or None. An explicit path is relative to features_dir. Either
    must stay inside features_dir (an id like ../x would read another split's files)."""
    for name in (sample_id, explicit):
        if name and (os.path.isabs(name) or ".." in Path(name).parts):
            raise UserError(f"'{name}' points outside the features directory", where or
                            str(features_dir), "ids and feature paths must be relative and "
                                               "stay inside it")
    if explicit:
        path = Path(features_dir) / explicit
        return path if path.is_file() else None
    return next((p for p in candidate_paths(features_dir, sample_id) if p.is_file()), None)


def _read_npy(path):
    return torch.from_numpy(np.load(path, allow_pickle=False))


def _npy_header_shape(path):
    """The array's shape from the .npy header alone (the data is not read)."""
    return np.load(path, mmap_mode="r", allow_pickle=False).shape


def _read_pt(path):
    value = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(value, dict) and len(value) == 1:
        value = next(iter(value.values()))
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"holds a {type(value).__name__}, not one tensor")
    return value


def _read_npz(path):
    with np.load(path, allow_pickle=False) as archive:
        if len(archive.files) != 1:
            raise ValueError(f"holds {len(archive.files)} arrays, expected one")
        return torch.from_numpy(archive[archive.files[0]])


@dataclass(frozen=True)
class FeatureFormat:
    read: Callable  # path -> tensor (any dtype, 1 or 2 dims: checked by load_features)
    header_shape: Optional[Callable] = None  # path -> shape without reading the data


# The feature file formats, by extension: looked up in this order for each sample id. A new
# format is one entry here.
FORMATS = {".npy": FeatureFormat(_read_npy, _npy_header_shape), ".pt": FeatureFormat(_read_pt),
           ".npz": FeatureFormat(_read_npz)}
EXTENSIONS = tuple(FORMATS)


def _read_array(path):
    # an explicit manifest path may have another extension: read as .npy, or named unreadable
    return FORMATS.get(path.suffix, FORMATS[".npy"]).read(path)


def load_features(path, expected_dim=None):
    """-> float32 tensor (T, D), checked: readable, 1-2 dims, frames, dimension, finite."""
    path = Path(path)
    try:
        x = _read_array(path)
    except FileNotFoundError:
        raise UserError("feature file disappeared", str(path)) from None
    except Exception as e:  # whatever numpy/torch/zipfile raise, the file is unreadable
        raise UserError(f"cannot read feature file ({type(e).__name__}: "
                        f"{str(e).splitlines()[0][:80] if str(e) else 'corrupt'})", str(path),
                        "re-extract this sample's features or remove its row") from None
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2:
        raise UserError(f"feature array has shape {tuple(x.shape)}, expected (T, D) or (D,)",
                        str(path), "save one (frames, dim) array per sample")
    if x.shape[0] == 0:
        raise UserError("feature file has zero frames", str(path), "remove its row")
    if x.shape[1] == 0:
        raise UserError("feature vectors have zero dimensions (shape "
                        f"{tuple(x.shape)})", str(path), "re-extract this sample's features")
    if expected_dim is not None and x.shape[1] != expected_dim:
        raise UserError(f"feature dimension {x.shape[1]}, expected {expected_dim} like the "
                        "rest", str(path), "use features from the same extractor")
    x = x.float()
    if not torch.isfinite(x).all():
        raise UserError("feature file holds NaN or Inf values", str(path),
                        "re-extract this sample's features or remove its row")
    return x


def feature_shape(path):
    """(T, D) without reading the data where the format allows (.npy header)."""
    path = Path(path)
    header_shape = FORMATS.get(path.suffix, FeatureFormat(None)).header_shape
    if header_shape is not None:
        try:
            shape = header_shape(path)
        except Exception as error:  # numpy raises ValueError, OSError, EOFError (0 bytes)...
            raise UserError(f"cannot read feature file ({type(error).__name__}: "
                            f"{str(error)[:80] or 'empty or truncated'})", str(path),
                            "re-extract this sample's features or remove its row") from None
        if len(shape) in (1, 2) and 0 not in shape:
            return (1, shape[0]) if len(shape) == 1 else tuple(shape)
    return tuple(load_features(path).shape)  # reads it, and names what is wrong


def subsample(x, max_frames):
    """Uniformly keep max_frames of T frames (0 = keep all)."""
    if not max_frames or x.shape[0] <= max_frames:
        return x
    index = torch.linspace(0, x.shape[0] - 1, max_frames).round().long()
    return x[index]
