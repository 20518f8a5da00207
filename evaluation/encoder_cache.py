"""The frozen-encoder cache: every sample's encoder states, computed once and kept on disk.

A frozen encoder in eval mode is a fixed function, so what it makes of a data set can serve
every epoch, every run and every process that asks for the same thing. "The same" is the
key: a hash of the encoder's weights and the feature statistics, the encoder kind, what the
bridge reads (pooled embedding or token states), the precision the encoder ran in,
--max_frames, and every sample's id and feature file (path, size, modification time). Any
change gives another key, so a stale cache is never read: it is built anew, never patched.

Layout, one directory per key (`python -m evaluation.encoder_cache list` shows them):
    CACHE_DIR/KEY/states.bin   every sample's states, one flat array of rows of width dim:
                               float16 for token states, float32 for pooled embeddings
    CACHE_DIR/KEY/index.npy    per sample: its first row, its row count and the CRC-32 of its
                               bytes in states.bin
    CACHE_DIR/KEY/meta.json    the key's parts in words, sizes, when and how long it took
    CACHE_DIR/KEY/used_by.txt  the runs that read it, a line each
    CACHE_DIR/KEY/.sonar_t5_cache  the marker that this toolkit made the directory
    CACHE_DIR/KEY.lock         held while one process builds KEY; others wait for it
A build writes to CACHE_DIR/.building-KEY-HOST-PID and renames it to KEY when complete, so a
killed build leaves nothing that looks like a cache; the next build of KEY removes its remains.

What a cache serves is verified, never trusted: on reuse meta.json must hold every field of
its schema and agree with the key's parts, the dtype and width the model needs, and the file
sizes; every sample's bytes are checked against their CRC-32 as they are read (about 5 GB/s,
a few milliseconds a batch). A damaged cache is a one-line error naming it and the command
that removes it. `clear` removes only directories this toolkit made (its marker, or a
meta.json it can parse naming the directory) and leaves anything else where it is.

Reading takes each sample's rows from the file when a batch needs them (os.pread), so no
process holds the states in RAM: the operating system's page cache keeps what fits, once for
every process. (A memory map would be as fast, but every page it touches stays counted in the
process's resident memory until the map goes, which is what overflows a 12 GB machine.)
"""
import argparse
import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from common.errors import UserError, cli_main
from common.files import write_json
from common.precision import autocast
from data.dataset import make_loader, model_inputs
from data.loader import SignalSafeDataLoader

from .generation import naming_the_batch_if_out_of_memory

FORMAT = 2  # bump when the layout or what a key covers changes (2: per-sample CRC-32)
CACHE_DIR_ENV = "SONAR_T5_CACHE_DIR"
CLEAR_HINT = "python -m evaluation.encoder_cache clear"
BUILDING = ".building-"
MARKER = ".sonar_t5_cache"  # in every directory a build makes: clear may remove it
KEY_PATTERN = re.compile(r"[0-9a-f]{24}")
# meta.json's schema: every field reuse checks, and its type
META_FIELDS = {"format": int, "key": str, "dim": int, "dtype": str, "rows": int, "bytes": int,
               "samples": int, "states": str, "encoder_kind": (str, type(None)),
               "weights_sha256": str, "samples_sha256": str, "precision": str,
               "max_frames": int, "feature_dim": int}
STATE_DTYPES = {"tokens": np.float16, "pooled": np.float32}  # what each input is stored as


def default_cache_dir():
    """$SONAR_T5_CACHE_DIR, else the user's cache directory: shared by every run."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sonar_t5" / "encoder_states"


# -- the key --------------------------------------------------------------------------------
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
             "states": model.config.resampler_input, "precision": precision,
             "max_frames": dataset.max_frames, "feature_dim": dataset.feature_dim,
             "samples": len(dataset), "samples_sha256": samples_hash(dataset)}
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
    return key, parts


# -- use or build ---------------------------------------------------------------------------
def cached_loaders(model, loaders, cache_dir, device, precision, *, show=True, used_by=None):
    """-> ([loader, ...], {name: info}): for each loader of the dict {name: loader}, the same
    batches, their inputs read from the cache of the model's encoder states for that loader's
    data set, built here unless a run built it already. The weights are hashed once for all.

    Each loader must serve a FeatureDataset. Under torchrun every process calls this: the
    first to take a key's lock builds, the others wait and then read the same files. show:
    print the one-line verdicts (the first process). used_by: the run directory, noted in
    each cache it reads.
    """
    start = time.time()  # the first data set's seconds include hashing the weights
    weights_sha256 = weights_hash(model)
    root = Path(cache_dir)
    served, infos = [], {}
    for name, loader in loaders.items():
        dataset = loader.dataset
        key, parts = cache_key(model, dataset, precision, weights_sha256)
        entry = root / key
        reused = entry.is_dir()  # a finished build is renamed into place whole
        if not reused:
            with key_lock(root, key, show):
                reused = entry.is_dir()  # another process built it while this one waited
                if not reused:
                    build(model, loader, root, key, parts, device, precision, show)
        states = CachedStates(entry, dataset, expected_meta(model, key, parts))
        infos[name] = {"key": key, "path": str(entry), "reused": reused,
                       "seconds": round(time.time() - start, 3), "bytes": states.nbytes}
        if reused and show:
            tqdm.write(f"encoder cache: reusing {entry} ({len(dataset)} samples of "
                       f"{dataset.manifest}, {size_text(states.nbytes)}, checked in "
                       f"{time.time() - start:.1f} s)")
        if used_by and show:
            note_use(entry, used_by)
        served.append(SignalSafeDataLoader(
            states, batch_sampler=loader.batch_sampler, collate_fn=loader.collate_fn,
            num_workers=loader.num_workers, pin_memory=device.type == "cuda",
            persistent_workers=loader.num_workers > 0))
        start = time.time()
    return served, infos


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
    tokens = parts["states"] == "tokens"
    dim = model.encoder.token_dim if tokens else model.encoder.config.output_dim
    return {**parts, "key": key, "dim": dim,
            "dtype": np.dtype(STATE_DTYPES[parts["states"]]).name}


def build(model, loader, root, key, parts, device, precision, show):
    """Encode every sample into root/.building-KEY-HOST-PID, then rename it to root/KEY."""
    dataset = loader.dataset
    for leftover in root.glob(f"{BUILDING}{key}-*"):  # a killed build's (we hold the lock)
        shutil.rmtree(leftover, ignore_errors=True)
    expected = expected_meta(model, key, parts)
    dim, dtype = expected["dim"], np.dtype(expected["dtype"])
    rows = sum(dataset.lengths) if parts["states"] == "tokens" else len(dataset)
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
            for batch in tqdm(every_sample, desc="caching frozen encoder outputs", leave=False,
                              disable=not show_progress):
                inputs = model_inputs(batch, device)
                with naming_the_batch_if_out_of_memory(batch), autocast(device, precision):
                    states, mask = model.encode(inputs["inputs"], inputs["input_mask"])
                for i, row, row_mask in zip(batch["index"].tolist(), states, mask):
                    yield i, row[row_mask.bool()].float().cpu()
    finally:
        model.train(was_training)


class DamagedCache(UserError):
    def __init__(self, what, entry):
        super().__init__(f"damaged encoder cache: {what}", str(entry),
                         f"remove it ({CLEAR_HINT} {Path(entry).name}) and run again: it is "
                         "rebuilt")


def read_meta(entry, expected):
    """meta.json of a cache, checked against its schema and `expected` (expected_meta())."""
    try:
        meta = json.loads((Path(entry) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DamagedCache(f"meta.json is unreadable ({type(error).__name__})", entry) from None
    if not isinstance(meta, dict):
        raise DamagedCache("meta.json is not a JSON object", entry)
    for name, kind in META_FIELDS.items():
        if name not in meta:
            raise DamagedCache(f"meta.json has no '{name}'", entry)
        if not isinstance(meta[name], kind) or isinstance(meta[name], bool):
            raise DamagedCache(f"meta.json's '{name}' is {meta[name]!r}", entry)
    for name, value in expected.items():
        if meta[name] != value:
            raise DamagedCache(f"meta.json says {name} {meta[name]!r}, this cache must hold "
                               f"{value!r}", entry)
    return meta


class CachedStates(Dataset):
    """Items like FeatureDataset's, the inputs being its samples' encoder states, read from
    the cache file when asked for, each checked against its CRC-32."""

    def __init__(self, entry, source, expected):
        """expected: what meta.json must say (expected_meta())."""
        self.entry, self.source = Path(entry), source
        meta = read_meta(self.entry, expected)
        try:
            self.index = np.load(self.entry / "index.npy", allow_pickle=False)
            size = os.path.getsize(self.entry / "states.bin")
        except (OSError, ValueError) as error:
            raise DamagedCache(f"unreadable ({type(error).__name__}: {error})", entry) from None
        self.dtype, self.dim = np.dtype(meta["dtype"]), meta["dim"]
        if (self.index.dtype != np.int64 or self.index.shape != (len(source), 3)
                or (self.index[:, :2] < 0).any()):
            raise DamagedCache(f"index.npy holds {self.index.dtype} {self.index.shape}, "
                               f"expected int64 ({len(source)}, 3)", entry)
        rows = int(self.index[:, 1].sum())
        self.nbytes = rows * self.dim * self.dtype.itemsize
        ends = self.index[:, 0] + self.index[:, 1]
        if size != self.nbytes or rows != meta["rows"] or ends.max(initial=0) > rows:
            raise DamagedCache(f"states.bin holds {size} bytes, the index and meta.json "
                               f"describe {self.nbytes}", entry)
        self.lengths = source.lengths
        self._fd, self._pid = None, None

    def __len__(self):
        return len(self.index)

    @property
    def rows(self):
        return self.source.rows

    def _file(self):
        if self._pid != os.getpid():  # opened per process: DataLoader workers fork
            self._fd, self._pid = os.open(self.entry / "states.bin", os.O_RDONLY), os.getpid()
        return self._fd

    def __getitem__(self, index):
        first, count, crc = (int(v) for v in self.index[index])
        row_bytes = self.dim * self.dtype.itemsize
        raw = os.pread(self._file(), count * row_bytes, first * row_bytes)
        row = self.source.rows[index]
        if len(raw) != count * row_bytes or zlib.crc32(raw) != crc:
            raise DamagedCache(f"the states of sample {row.id} do not match the checksum "
                               "recorded when the cache was built", self.entry)
        states = np.frombuffer(raw, self.dtype).reshape(count, self.dim).astype(np.float32)
        return {"index": index, "id": row.id, "text": row.text,
                "inputs": torch.from_numpy(states), "encoded": True}

    def __getstate__(self):  # a worker process opens its own file
        return {**self.__dict__, "_fd": None, "_pid": None}


def note_use(entry, used_by):
    """One line in used_by.txt; a read-only shared cache is fine without it."""
    try:
        with open(entry / "used_by.txt", "a", encoding="utf-8") as f:
            f.write(f"{now()}\t{Path(used_by).resolve()}\n")
    except OSError:
        pass


def size_text(nbytes):
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def now():
    return datetime.datetime.now().isoformat(timespec="seconds")


# -- see and clear: python -m evaluation.encoder_cache list|clear ---------------------------
def entries(root):
    """-> ([(name, meta or None for an unfinished build, bytes on disk, runs that used it)],
    [names of the other things in root]): the caches are the directories this toolkit made."""
    found, foreign = [], []
    for path in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        if path.is_file() and path.suffix == ".lock" and KEY_PATTERN.fullmatch(path.stem):
            continue  # a build lock (an empty file that a waiting build may hold open)
        meta = made_here(path)
        if meta is False:
            foreign.append(path.name)
            continue
        size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        used = path / "used_by.txt"
        runs = used.read_text().splitlines() if meta is not None and used.is_file() else []
        found.append((path.name, meta, size, runs))
    return found, foreign


def made_here(path):
    """-> False unless `path` is a directory a build made: then its meta ({} when damaged),
    or None for an unfinished build. The proof is the marker a build writes first, or (a
    cache of an older version) a meta.json that parses and names the directory's key."""
    if not path.is_dir() or path.is_symlink():
        return False
    building = path.name.startswith(BUILDING)
    key = path.name[len(BUILDING):].split("-")[0] if building else path.name
    if not KEY_PATTERN.fullmatch(key):
        return False
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("key") != key:
        meta = None
    if meta is None and not (path / MARKER).is_file():
        return False
    return None if building else (meta or {})


def list_caches(root):
    found, foreign = entries(root)
    print(f"{root}: {len(found)} cache{'s' * (len(found) != 1)}, "
          f"{size_text(sum(size for _, _, size, _ in found))}")
    for name, meta, size, runs in found:
        if meta is None:
            print(f"  {name}  {size_text(size)}  unfinished build (killed?), or one running")
            continue
        if not meta:
            print(f"  {name}  {size_text(size)}  damaged (meta.json unreadable): clear it")
            continue
        last = runs[-1].split("\t") if runs else None
        print(f"  {name}  {size_text(size)}  {meta.get('samples')} samples, "
              f"{meta.get('states')} {meta.get('dim')}-d {meta.get('dtype')}, "
              f"{meta.get('encoder_kind')} encoder {str(meta.get('weights_sha256'))[:12]}, "
              f"max_frames {meta.get('max_frames')}, {meta.get('precision')}\n"
              f"      {meta.get('manifest')}\n"
              f"      built {meta.get('built')} in {meta.get('build_seconds')} s; "
              + (f"used by {len(runs)} run(s), last {last[0]} {last[1]}" if last
                 else "no run noted"))
    if foreign:
        print(f"also here, not caches (never cleared): {', '.join(foreign)}")


def clear_caches(root, names):
    """Remove the named caches (all with names == []), each under its build lock so a build
    in progress is left alone. A run reading a removed cache keeps its open file. Only
    directories this toolkit made are removed; whatever else is in root stays."""
    found, foreign = entries(root)
    caches = {name for name, *_ in found}
    for name in names:
        if name in foreign:
            raise UserError(f"{name} is not a cache this toolkit made (no marker, no meta.json "
                            "naming it); nothing was removed", str(Path(root) / name),
                            "remove it yourself if you meant to")
        if name not in caches:
            raise UserError(f"no cache named {name}", str(root),
                            "see the names with: python -m evaluation.encoder_cache list")
    freed = 0
    for name in names or sorted(caches):
        key = name[len(BUILDING):].split("-")[0] if name.startswith(BUILDING) else name
        fd = os.open(Path(root) / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"  {name}: a build of it is running; left alone")
            os.close(fd)
            continue
        try:
            path = Path(root) / name
            freed += sum(f.stat().st_size for f in path.iterdir() if f.is_file())
            shutil.rmtree(path)  # the empty lock file stays: a waiting build holds it open
            print(f"  removed {name}")
        finally:
            os.close(fd)
    print(f"freed {size_text(freed)} in {root}")
    if foreign and not names:
        print(f"left alone, not caches this toolkit made: {', '.join(foreign)}")


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.encoder_cache",
        description="See and clear the frozen-encoder caches that training and validation "
                    "share.")
    parser.add_argument("command", choices=("list", "clear"))
    parser.add_argument("names", nargs="*", help="clear: the caches to remove (see list)")
    parser.add_argument("--all", action="store_true", help="clear: remove every cache")
    parser.add_argument("--encoder_cache_dir", default=None,
                        help=f"default: ${CACHE_DIR_ENV}, else {default_cache_dir()}")
    args = parser.parse_args(argv)
    root = Path(args.encoder_cache_dir or default_cache_dir())
    if args.command == "list":
        list_caches(root)
    elif args.names or args.all:
        clear_caches(root, args.names)
    else:
        raise UserError("clear needs cache names or --all", "command line",
                        "see the names with: python -m evaluation.encoder_cache list")


if __name__ == "__main__":
    sys.exit(main())
