"""Frozen encoder: compute each sample's encoder states once and train on them.

A frozen encoder in eval mode is a fixed function, so re-encoding the same features every
epoch is wasted work. Pooled states are (1, 1024) a sample; token states (T, 1024) are stored
as float16 to halve the memory they take.
"""
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from common.precision import autocast
from data.dataset import make_loader, model_inputs
from evaluation.generation import naming_the_batch_if_out_of_memory


class CachedStatesDataset(Dataset):
    """Items like FeatureDataset's, with the encoder's states as already-encoded inputs."""

    def __init__(self, source, states):
        self.source, self.states = source, states
        self.lengths = source.lengths

    def __len__(self):
        return len(self.states)

    def __getitem__(self, index):
        row = self.source.rows[index]
        return {"index": index, "id": row.id, "text": row.text,
                "inputs": self.states[index].float(), "encoded": True}

    @property
    def rows(self):
        return self.source.rows


def cached_loader(model, loader, runtime):
    """The same batches as `loader`, served from the encoder's outputs computed once here.

    Every sample, in every process: under torchrun each epoch deals the training batches out
    afresh, so a process needs more than its first epoch's share."""
    every_sample = make_loader(loader.dataset, loader.collate_fn,
                               loader.batch_sampler.batch_size, shuffle=False,
                               num_workers=loader.num_workers)
    model.eval()
    with torch.random.fork_rng(devices=[]):  # leave the training RNG stream as it was
        states = encode_all(model, every_sample, runtime.device, runtime.precision,
                            runtime.dist.is_main)
    return DataLoader(CachedStatesDataset(loader.dataset, states),
                      batch_sampler=loader.batch_sampler, collate_fn=loader.collate_fn,
                      pin_memory=runtime.device.type == "cuda")


@torch.no_grad()
def encode_all(model, loader, device, precision, show_progress=True):
    """-> one tensor of encoder states per sample, unpadded, on the CPU."""
    dtype = torch.float32 if model.config.resampler_input == "pooled" else torch.float16
    states = [None] * len(loader.dataset)
    for batch in tqdm(loader, desc="caching frozen encoder outputs", leave=False,
                      disable=not show_progress):
        inputs = model_inputs(batch, device)
        with naming_the_batch_if_out_of_memory(batch), autocast(device, precision):
            s, mask = model.encode(inputs["inputs"], inputs["input_mask"])
        for index, row, row_mask in zip(batch["index"].tolist(), s, mask):
            states[index] = row[row_mask.bool()].to("cpu", dtype)
    return states
