"""Building a cache: every sample encoded once, under a lock, written whole or not at all."""
import errno
import fcntl
import os
import shutil
import socket
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from sonar_t5.common.errors import UserError
from sonar_t5.common.files import write_json
from sonar_t5.common.precision import autocast
from sonar_t5.common.progress import progress

from ..dataset import make_loader, model_inputs, naming_the_batch_if_out_of_memory
from .layout import BUILDING, MARKER, now, size_text

STATE_DTYPES = {"tokens": np.float16, "pooled": np.float32}  # what each input is stored as


@contextmanager
def key_lock(root, key, show):
    """Exclusive while building `key`, across processes (torchrun's, or two runs at once)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as error:
        raise UserError(f"cannot write the encoder cache directory ({error.strerror or error})",
                        str(root), "pass --encoder_cache_dir with a writable directory, or "
                                   "--no_encoder_cache") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if show:
                tqdm.write(f"encoder cache: another process is building {key}; waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def expected_meta(model, key, parts):
    """What meta.json of the cache `key` must say for this model: the key's parts, and the
    width and dtype its states are stored with."""
    tokens = parts["resampler_input"] == "tokens"
    dim = model.encoder.token_dim if tokens else model.encoder.config.output_dim
    return {**parts, "key": key, "dim": dim,
            "dtype": np.dtype(STATE_DTYPES[parts["resampler_input"]]).name}


def build_cache(model, loader, root, key, parts, device, precision, show):
    """Encode every sample into root/.building-KEY-HOST-PID, then rename it to root/KEY."""
    dataset = loader.dataset
    for leftover in root.glob(f"{BUILDING}{key}-*"):  # a killed build's (we hold the lock)
        shutil.rmtree(leftover, ignore_errors=True)
    expected = expected_meta(model, key, parts)
    dim, dtype = expected["dim"], np.dtype(expected["dtype"])
    rows = sum(dataset.lengths) if parts["resampler_input"] == "tokens" else len(dataset)
    check_free_space(root, rows * dim * dtype.itemsize)
    tmp = root / f"{BUILDING}{key}-{socket.gethostname()}-{os.getpid()}"
    start = time.time()
    try:
        tmp.mkdir()
        (tmp / MARKER).write_text(f"{key}\n")
        index = np.full((len(dataset), 3), -1, dtype=np.int64)  # first row, row count, CRC-32
        written = 0
        with open(tmp / "states.bin", "wb") as f:
            for i, states in encode_all(model, loader, device, precision, show):
                array = states.numpy().astype(dtype)
                if not np.isfinite(array).all():
                    raise UserError(f"the encoder's states for sample {dataset.rows[i].id} are "
                                    f"not finite as {dtype.name}", str(dataset.manifest),
                                    "train with --no_encoder_cache")
                raw = array.tobytes()
                f.write(raw)
                index[i] = written, len(array), zlib.crc32(raw)
                written += len(array)
            f.flush()
            os.fsync(f.fileno())
        assert (index[:, 1] >= 0).all(), "a sample was not encoded"
        np.save(tmp / "index.npy", index)
        seconds = time.time() - start
        write_json(tmp / "meta.json", {
            **expected, "rows": written, "bytes": written * dim * dtype.itemsize,
            "manifest": str(Path(dataset.manifest).resolve()),
            "features": str(Path(dataset.features_dir).resolve()),
            "built": now(), "build_seconds": round(seconds, 3),
            "built_by": f"{socket.gethostname()} pid {os.getpid()}"})
        os.rename(tmp, root / key)  # the cache exists from here on, whole
        fsync_dir(root)
    except OSError as error:
        shutil.rmtree(tmp, ignore_errors=True)
        fix = ("free disk space, or pass --encoder_cache_dir on a larger disk, or "
               "--no_encoder_cache") if error.errno in (errno.ENOSPC, errno.EDQUOT) else (
            "pass --encoder_cache_dir with a writable directory, or --no_encoder_cache")
        raise UserError(f"could not write the encoder cache ({error.strerror or error}); "
                        "nothing was kept", str(root), fix) from None
    except BaseException:  # Ctrl-C, a bad sample: no half cache stays behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    tqdm.write(f"encoder cache: built {root / key} ({len(dataset)} samples of "
               f"{dataset.manifest}, {size_text(written * dim * dtype.itemsize)}, "
               f"{seconds:.1f} s)")


def fsync_dir(path):
    """Make a rename in `path` survive a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def check_free_space(root, needed):
    free = shutil.disk_usage(root).free
    if needed > free:
        raise UserError(f"the encoder cache needs {size_text(needed)} and the disk has "
                        f"{size_text(free)} free", str(root),
                        "free disk space, or pass --encoder_cache_dir on a larger disk, or "
                        "--no_encoder_cache")


@torch.no_grad()
def encode_all(model, loader, device, precision, show_progress=True):
    """Yields (sample index, its encoder states on the CPU, unpadded) for every sample of the
    loader's data set, in a fixed order, leaving the training RNG stream as it was."""
    every_sample = make_loader(loader.dataset, loader.collate_fn,
                               loader.batch_sampler.batch_size, shuffle=False,
                               num_workers=loader.num_workers)
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            for batch in progress(every_sample, desc="caching frozen encoder outputs",
                                  leave=False, disable=not show_progress):
                inputs = model_inputs(batch, device)
                with naming_the_batch_if_out_of_memory(batch), autocast(device, precision):
                    states, mask = model.encode(inputs["inputs"], inputs["input_mask"])
                for i, row, row_mask in zip(batch["index"].tolist(), states, mask):
                    yield i, row[row_mask.bool()].float().cpu()
    finally:
        model.train(was_training)
