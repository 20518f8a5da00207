"""The frozen-encoder cache: every sample's encoder states, computed once and kept on disk.

A frozen encoder in eval mode is a fixed function, so what it makes of a data set can serve
every epoch, every run and every process that asks for the same thing. "The same" is the
key: a hash of the encoder's weights and the feature statistics, the encoder kind, what the
bridge reads (pooled embedding or token states), the precision the encoder ran in,
--max_frames, and every sample's id and feature file (path, size, modification time). Any
change gives another key, so a stale cache is never read: it is built anew, never patched.

Layout, one directory per key (`python -m sonar_t5.data.encoder_cache list` shows them):
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

The package: layout.py (where things are on disk), key.py (what decides a cache), build.py
(encoding a data set once, under a lock), reader.py (serving and verifying it); the
`list`/`clear` command is __main__.py.
"""
import time
from pathlib import Path

from tqdm.auto import tqdm

from ..loader import SignalSafeDataLoader
from .build import build_cache, expected_meta, key_lock
from .key import cache_key, samples_hash, weights_hash
from .layout import CACHE_DIR_ENV, default_cache_dir, note_use, size_text
from .reader import CachedStates, DamagedCache

__all__ = ["CACHE_DIR_ENV", "CachedStates", "DamagedCache", "cache_key", "cached_loaders",
           "default_cache_dir", "samples_hash", "weights_hash"]


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
                    build_cache(model, loader, root, key, parts, device, precision, show)
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
