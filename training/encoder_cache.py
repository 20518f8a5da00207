"""Frozen encoder: compute each sample's encoder states once and train on them.

The seed's frozen run re-encoded the same features every epoch. A frozen encoder in eval mode
is a fixed function, so its outputs can be computed once. Pooled states are (1, 1024) a sample;
token states (T, 1024) are stored as float16 to halve the memory they take.
"""
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from evaluation.generation import to_device
from training.precision import autocast


class CachedStatesDataset(Dataset):
    """Items like FeatureDataset's, with `states` instead of `features`."""

    def __init__(self, source, states):
        self.source, self.states = source, states
        self.lengths = source.lengths

    def __len__(self):
        return len(self.states)

    def __getitem__(self, index):
        row = self.source.rows[index]
        return {"index": index, "id": row.id, "text": row.text,
                "states": self.states[index].float()}

    @property
    def rows(self):
        return self.source.rows


@torch.no_grad()
def cache_encoder_states(model, loader, device, precision, show_progress=True):
    """-> CachedStatesDataset over loader.dataset, the encoder run once per sample."""
    model.eval()
    with torch.random.fork_rng(devices=[]):  # leave the training RNG stream as it was
        return _cache(model, loader, device, precision, show_progress)


def _cache(model, loader, device, precision, show_progress):
    dtype = torch.float32 if model.config.resampler_input == "pooled" else torch.float16
    states = [None] * len(loader.dataset)
    for batch in tqdm(loader, desc="caching frozen encoder outputs", leave=False,
                      disable=not show_progress):
        with autocast(device, precision):
            s, mask = model.encode(**to_device(batch, device))
        for index, row, row_mask in zip(batch["index"].tolist(), s, mask):
            states[index] = row[row_mask.bool()].to("cpu", dtype)
    return CachedStatesDataset(loader.dataset, states)
