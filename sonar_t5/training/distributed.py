"""Where a run runs: the device, its precision, and several processes under torchrun (one
writes files, metrics are gathered from all)."""
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.distributed as torch_dist
from tqdm.auto import tqdm

from sonar_t5.common.device import resolve_device
from sonar_t5.common.errors import Terminated, UserError, stop_here
from sonar_t5.common.precision import resolve_precision


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
    stops_noted: list = field(default_factory=list)  # signals awaiting agreement (torchrun)

    def say(self, message):
        """Print once (on the first process), between progress bars."""
        if self.dist.is_main:
            tqdm.write(message)

    def agree_on_stops(self):
        """Under torchrun, from here on: a stop signal (Ctrl-C, SIGTERM) is noted, and acted on
        where the processes agree (stop_if_any_asked). A process that stopped alone would
        leave the others waiting in a collective operation (DDP's gradient all-reduce, the
        metrics' gather) until its timeout, the first process, which saves, among them."""
        if self.dist.enabled:
            for s in (signal.SIGINT, signal.SIGTERM):
                signal.signal(s, lambda signum, _: self.stops_noted.append(signum))

    def stop_if_any_asked(self):
        """Under torchrun, every process calls this at the same points (each optimizer step,
        each epoch's end): if any was signalled, all raise the stop here, together (SIGTERM
        before Ctrl-C). One all-reduce of one number."""
        if not self.dist.enabled:
            return
        flag = torch.tensor([max(self.stops_noted, default=0)], device=self.device)
        torch_dist.all_reduce(flag, op=torch_dist.ReduceOp.MAX)
        signum = int(flag.item())
        if signum:
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


    def stop_checks(self, batches):
        """after_batch for a loop whose processes may run different numbers of batches (each
        its own share of the validation set): stop_if_any_asked after each batch that every
        process has, so a stop waits for one batch, not for the whole loop."""
        if not self.dist.enabled:
            return None  # one process: a stop is raised wherever it is
        common = torch.tensor([batches], device=self.device)
        torch_dist.all_reduce(common, op=torch_dist.ReduceOp.MIN)
        common = int(common.item())
        return lambda i: self.stop_if_any_asked() if i < common else None

    def stop_at_once(self):
        """From here on a stop signal is raised where the program is, as in one process: for
        work one process does alone (the end-of-training scoring), with no other process to
        wait for it."""
        for s in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(s) not in (signal.SIG_IGN, None):
                signal.signal(s, stop_here)
        if self.stops_noted:  # noted after the last agreed check
            raise Terminated if signal.SIGTERM in self.stops_noted else KeyboardInterrupt


@contextmanager
def open_runtime(device_name, precision_name, num_threads=0, flags=None):
    """`with open_runtime(args.device, args.precision) as runtime:` joins torchrun's process
    group when launched by torchrun and leaves it at the end, whatever happens. flags (the
    run's {flag: value}): refused unless every process has the same."""
    if num_threads:
        torch.set_num_threads(num_threads)
    dist, device = init_distributed(device_name)
    try:
        if flags is not None:
            check_same_flags(flags, dist)
        yield Runtime(device, resolve_precision(precision_name, device), dist)
    finally:
        cleanup(dist)


# What may differ between the nodes of a run: where each keeps its own files and threads.
NODE_LOCAL_FLAGS = ("encoder_cache_dir", "num_workers", "num_threads")


def check_same_flags(flags, dist):
    """Every process of a torchrun job (on every node) must train the same model the same way:
    a node started with other flags is refused by all, before any file is written."""
    if not dist.enabled:
        return
    mine = {k: v for k, v in flags.items() if k not in NODE_LOCAL_FLAGS}
    everyone = gather_lists(mine, dist)
    differ = sorted({k for other in everyone for k in mine if other.get(k) != mine[k]})
    if differ:
        shown = "; ".join(f"--{k} " + ", ".join(f"{other.get(k)} on rank {rank}"
                                                 for rank, other in enumerate(everyone))
                          for k in differ[:3])
        raise UserError(f"the processes were started with different flags: {shown}",
                        "torchrun", "start every node with the same command (only "
                        f"{', '.join('--' + k for k in NODE_LOCAL_FLAGS)} may differ)")


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
    torch_dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    stop_when_the_launcher_ends()
    return Dist(torch_dist.get_rank(), world_size, local_rank), device


LAUNCHER_GONE_GRACE_S = 120  # for the stop's save, then the process is ended


def stop_when_the_launcher_ends():
    """torchrun starts each process in a session of its own, so a signal to the job's process
    group reaches only the launcher; killed outright (kill -9 of the group), the launcher
    leaves its processes running. A process whose launcher is gone (it was re-parented) stops
    as on SIGTERM: the processes agree to stop, save and exit 143; one that has not exited
    LAUNCHER_GONE_GRACE_S later (a peer gone too) is ended."""
    launcher = os.getppid()

    def watch():
        while os.getppid() == launcher:
            time.sleep(1)
        print(f"note: torchrun (pid {launcher}), which started this process, has ended: "
              "stopping", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(LAUNCHER_GONE_GRACE_S)
        os._exit(1)

    threading.Thread(target=watch, name="launcher watch", daemon=True).start()


def all_reduce_sum(values, dist, device):
    """Sum a list of floats over processes."""
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.enabled:
        torch_dist.all_reduce(tensor)
    return tensor.tolist()


def gather_dicts(part, dist):
    """Merge a dict from every process (e.g. index -> translation)."""
    if not dist.enabled:
        return part
    parts = [None] * dist.world_size
    torch_dist.all_gather_object(parts, part)
    return {k: v for p in parts for k, v in p.items()}


def gather_lists(part, dist):
    """[every process's list], by rank."""
    if not dist.enabled:
        return [part]
    parts = [None] * dist.world_size
    torch_dist.all_gather_object(parts, part)
    return parts


def broadcast(obj, dist):
    """rank 0's object on every process."""
    if not dist.enabled:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(dist):
    if dist.enabled:
        torch_dist.barrier()


def cleanup(dist):
    if dist.enabled and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
