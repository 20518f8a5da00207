"""Reading a cache: each sample's states when a batch asks for them, verified."""
import json
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sonar_t5.common.errors import UserError

from .layout import CLEAR_HINT

# meta.json's schema: every field reuse checks, and its type
META_FIELDS = {"format": int, "key": str, "dim": int, "dtype": str, "rows": int, "bytes": int,
               "samples": int, "resampler_input": str, "encoder_kind": (str, type(None)),
               "weights_sha256": str, "samples_sha256": str, "precision": str,
               "max_frames": int, "feature_dim": int}


class DamagedCache(UserError):
    def __init__(self, what, entry=None):
        if entry is None:  # re-raised from a DataLoader worker: `what` is the whole message
            super().__init__(what)
            return
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
