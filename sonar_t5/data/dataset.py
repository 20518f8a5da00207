"""Dataset, collate and the length-grouped batch sampler.

Every batch has one shape, whatever its source:
    inputs (B, T, D), input_mask (B, T) True = real frame, encoded (bool), labels (B, S),
    index (B,), ids, texts.
`encoded` says whether the inputs already are encoder states (the frozen-encoder cache,
sonar_t5/data/encoder_cache/) or raw features from files (FeatureDataset). Feature files are
opened lazily in __getitem__: memory does not grow with the dataset.
"""
import math
import os
from contextlib import contextmanager
import warnings
from collections import Counter

import torch
from torch.utils.data import Dataset

from sonar_t5.common.errors import UserError
from sonar_t5.common.progress import progress

from .features import feature_shape, find_feature_file, load_features, subsample
from .loader import SignalSafeDataLoader

DIM_SAMPLE = 32  # files whose dimension decides the data set's, so one odd file is named
from .manifest import read_manifest


class FeatureDataset(Dataset):
    """Rows of a manifest whose feature files exist. Items: {index, id, text, inputs, encoded}."""

    def __init__(self, manifest, features_dir, *, max_frames=0, skip_missing=False,
                 expected_dim=None, limit=None, skip_missing_flag="--skip_missing"):
        """expected_dim: the feature dimension (e.g. the encoder's); else the one most of the
        first files have. skip_missing_flag: the flag that drops rows without a file, named
        in the error (None where the script has no such flag)."""
        self.manifest, self.features_dir, self.max_frames = manifest, features_dir, max_frames
        if not features_dir or not os.path.isdir(features_dir):
            raise UserError("features directory not found", str(features_dir),
                            "check --*_features")
        rows = read_manifest(manifest)[:limit]
        paths = [find_feature_file(features_dir, r.id, r.feature_path, f"{manifest}:{r.line}")
                 for r in rows]
        missing = [r.id for r, p in zip(rows, paths) if p is None]
        if missing and not skip_missing:
            fix = "fix the paths" + (f", or pass {skip_missing_flag} to drop those rows"
                                     if skip_missing_flag else "")
            raise UserError(
                f"{len(missing)} of {len(rows)} feature files are missing (first: "
                f"{', '.join(missing[:3])})", f"manifest {manifest}, features {features_dir}",
                fix)
        if missing:
            warnings.warn(f"skipping {len(missing)} rows of {manifest} with no feature file "
                          f"(first: {', '.join(missing[:3])})", stacklevel=2)
        kept = [(r, p) for r, p in zip(rows, paths) if p is not None]
        if not kept:
            raise UserError("no row has a feature file", str(manifest))
        self.rows, self.paths = [r for r, _ in kept], [p for _, p in kept]
        self.feature_dim = expected_dim or majority_dim(self.paths[:DIM_SAMPLE])
        self._lengths = None

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        x = load_features(self.paths[index], expected_dim=self.feature_dim)
        row = self.rows[index]
        return {"index": index, "id": row.id, "text": row.text,
                "inputs": subsample(x, self.max_frames), "encoded": False}

    def check_widths(self):
        """Every file's feature dimension is the data set's (the .npy header alone where it
        can): for a split read only later (the test split, scored when training ends), so
        that an odd file is named before the work, not after it."""
        for path in progress(self.paths, desc=f"checking {self.manifest}", leave=False):
            dim = feature_shape(path)[1]
            if dim != self.feature_dim:
                raise UserError(f"feature dimension {dim}, expected {self.feature_dim} like the "
                                "training features", str(path),
                                "re-extract this sample's features or remove its row")

    @property
    def texts(self):
        return [r.text for r in self.rows]

    @property
    def lengths(self):
        """Frames per sample (after --max_frames): the manifest's length column when it has
        one, else each file's shape (.npy headers are read without loading the data)."""
        if self._lengths is None:
            if all(r.length is not None for r in self.rows):
                raw = [r.length for r in self.rows]
            else:
                raw = [feature_shape(p)[0] for p in progress(
                    self.paths, desc=f"measuring lengths ({self.manifest})", leave=False)]
            self._lengths = [min(n, self.max_frames) if self.max_frames else n for n in raw]
        return self._lengths


def majority_dim(paths):
    """The feature dimension most of these files have: one odd file among the first does not
    make every good file the culprit."""
    dims = Counter(feature_shape(p)[1] for p in paths)
    return dims.most_common(1)[0][0]


class Collator:
    """Pads inputs (zeros) and labels (-100) to the longest in the batch; input_mask marks
    real frames (True)."""

    def __init__(self, tokenizer, max_target_length=128):
        self.tokenizer, self.max_target_length = tokenizer, max_target_length
        self.label_ids = {}  # text -> its labels: each sentence is tokenized once per run

    def labels(self, text):
        if text not in self.label_ids:
            self.label_ids[text] = torch.tensor(self.tokenizer.encode(text,
                                                                      self.max_target_length))
        return self.label_ids[text]

    def __call__(self, items):
        lengths = torch.tensor([it["inputs"].shape[0] for it in items])
        padded = torch.nn.utils.rnn.pad_sequence([it["inputs"] for it in items], batch_first=True)
        labels = [self.labels(it["text"]) for it in items]
        return {"index": torch.tensor([it["index"] for it in items]),
                "ids": [it["id"] for it in items], "texts": [it["text"] for it in items],
                "inputs": padded, "input_mask": torch.arange(padded.shape[1]) < lengths[:, None],
                "encoded": items[0]["encoded"],
                "labels": torch.nn.utils.rnn.pad_sequence(labels, batch_first=True,
                                                          padding_value=-100)}


class LengthGroupedBatchSampler:
    """Batches of similar length, like HF's LengthGroupedSampler, split across processes.

    Training (shuffle=True): a seeded permutation is cut into mega-batches of
    `mega_batch_mult` batches, each sorted by length and cut into batches; the batch order
    is then shuffled. Evaluation (shuffle=False): all samples sorted by length. Each process
    (rank) takes every num_replicas-th batch. In training the batch list is padded by
    repeating so all processes get the same count (DDP needs one backward each); evaluation
    is not padded, so each sample is scored once. set_epoch() reseeds.
    """

    def __init__(self, lengths, batch_size, *, shuffle=True, seed=0, num_replicas=1, rank=0,
                 mega_batch_mult=50):
        self.lengths, self.batch_size, self.shuffle, self.seed = lengths, batch_size, shuffle, seed
        self.num_replicas, self.rank, self.mega = num_replicas, rank, mega_batch_mult
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch, start_batch=0):
        """start_batch skips batches already trained on (resuming mid-epoch)."""
        self.epoch, self.start_batch = epoch, start_batch

    def _batches(self):
        n = len(self.lengths)
        if not self.shuffle:
            order = sorted(range(n), key=lambda i: -self.lengths[i])
            return [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(n, generator=g).tolist()
        size = self.mega * self.batch_size
        batches = []
        for start in range(0, n, size):
            mega = sorted(perm[start:start + size], key=lambda i: -self.lengths[i])
            batches += [mega[i:i + self.batch_size] for i in range(0, len(mega), self.batch_size)]
        return [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]

    def _my_batches(self):
        batches = self._batches()
        if self.shuffle:
            total = math.ceil(len(batches) / self.num_replicas) * self.num_replicas
            batches += batches[: total - len(batches)]
        return batches[self.rank::self.num_replicas]

    def __iter__(self):
        return iter(self._my_batches()[self.start_batch:])

    def __len__(self):
        batches = math.ceil(len(self.lengths) / self.batch_size)
        if self.shuffle:
            return math.ceil(batches / self.num_replicas) - self.start_batch
        return len(range(self.rank, batches, self.num_replicas)) - self.start_batch


def padding_waste(lengths, batches):
    """Fraction of padded frames over all frames the batches hold."""
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths[i] for b in batches for i in b) / padded


def make_loader(dataset, collate, batch_size, *, shuffle, seed=0, num_workers=0,
                num_replicas=1, rank=0, pin_memory=False):
    sampler = LengthGroupedBatchSampler(dataset.lengths, batch_size, shuffle=shuffle,
                                        seed=seed, num_replicas=num_replicas, rank=rank)
    return SignalSafeDataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                num_workers=num_workers, pin_memory=pin_memory,
                                persistent_workers=num_workers > 0)


def model_inputs(batch, device):
    """The keyword arguments SonarT5.prefix() and forward() take, on `device`."""
    non_blocking = device.type == "cuda"
    return {"inputs": batch["inputs"].to(device, non_blocking=non_blocking),
            "input_mask": batch["input_mask"].to(device, non_blocking=non_blocking),
            "encoded": batch["encoded"]}


@contextmanager
def naming_the_batch_if_out_of_memory(batch):
    """A batch too large for memory (a 20,000-frame sample asks for hundreds of GB of
    attention) becomes one line naming its longest sample and the flag that caps lengths."""
    try:
        yield
    except RuntimeError as error:  # torch.OutOfMemoryError on CUDA is a RuntimeError too
        if not ("out of memory" in str(error) or "can't allocate memory" in str(error)):
            raise
        frames = batch["input_mask"].sum(1)
        longest = int(frames.argmax())
        raise UserError(f"out of memory on a batch of {len(frames)} samples, the longest "
                        f"'{batch['ids'][longest]}' with {int(frames[longest])} frames",
                        "the model's forward pass", "cap sequence lengths with --max_frames "
                        "(e.g. 1000), or lower the batch size") from None
