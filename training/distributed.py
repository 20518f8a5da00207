"""Where a run runs: the device, its precision, and several processes under torchrun (one
writes files, metrics are gathered from all)."""
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from common.device import resolve_device
from common.precision import resolve_precision


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def enabled(self):
        return self.world_size > 1


@dataclass
class Runtime:
    device: torch.device
    precision: str  # fp32, bf16 or fp16
    dist: Dist

    def say(self, message):
        """Print once (on the first process), between progress bars."""
        if self.dist.is_main:
            tqdm.write(message)


@contextmanager
def open_runtime(device_name, precision_name, num_threads=0):
    """`with open_runtime(args.device, args.precision) as runtime:` joins torchrun's process
    group when launched by torchrun and leaves it at the end, whatever happens."""
    if num_threads:
        torch.set_num_threads(num_threads)
    dist_info, device = init_distributed(device_name)
    try:
        yield Runtime(device, resolve_precision(precision_name, device), dist_info)
    finally:
        cleanup(dist_info)


def init_distributed(device_name):
    """-> (Dist, device). torchrun sets WORLD_SIZE/RANK/LOCAL_RANK; NCCL on GPUs, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Dist(), resolve_device(device_name)
    local_rank = int(os.environ["LOCAL_RANK"])
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), world_size, local_rank), device


def all_reduce_sum(values, dist_info, device):
    """Sum a list of floats over processes."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist_info.enabled:
        dist.all_reduce(tensor)
    return tensor.tolist()


def gather_dicts(part, dist_info):
    """Merge a dict from every process (e.g. index -> translation)."""
    if not dist_info.enabled:
        return part
    parts = [None] * dist_info.world_size
    dist.all_gather_object(parts, part)
    return {k: v for p in parts for k, v in p.items()}


def broadcast(obj, dist_info):
    """rank 0's object on every process."""
    if not dist_info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def cleanup(dist_info):
    if dist_info.enabled and dist.is_initialized():
        dist.destroy_process_group()
