"""torch's DataLoader, with worker processes that leave stop signals to the main process.

Ctrl-C in a terminal, Slurm's scancel, preemption and time limit, `timeout`, `docker stop` and
systemd signal every process of the job, DataLoader workers included. A worker killed by
SIGTERM makes PyTorch raise "DataLoader worker (pid N) is killed by signal" in the main
process, in the middle of its graceful stop (the save, the resume line, exit 143). So the
workers ignore SIGINT and SIGTERM: the main process alone handles the stop, and ends its
workers itself (they also end when it dies). The two signals are blocked while workers start,
so none lands between a worker's fork and its ignoring them; one that arrives then is
delivered to the main process as soon as the workers are up.
"""
import functools
import signal
import sys

import torch

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class SignalSafeDataLoader(torch.utils.data.DataLoader):
    def __init__(self, *args, worker_init_fn=None, **kwargs):
        super().__init__(*args, worker_init_fn=functools.partial(_leave_stops_to_main,
                                                                 worker_init_fn), **kwargs)

    def __iter__(self):
        if self.num_workers == 0:
            return super().__iter__()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            return super().__iter__()  # forks the workers (the first time)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def _leave_stops_to_main(then, worker_id):
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)  # also drops one that arrived while blocked
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    sys.excepthook = quiet_when_the_main_process_left
    if then is not None:
        then(worker_id)


def quiet_when_the_main_process_left(exc_type, exc, traceback):
    """A worker hands each batch's tensors to the main process through a thread of its own
    (multiprocessing's resource sharer, which reports its errors to sys.excepthook). When the
    main process stops (Ctrl-C, SIGTERM) during such a hand-over, that thread's connection is
    reset and it would print a traceback into the run's log, after the graceful stop; nothing
    is lost (the batch was for a process that is ending). Other errors print as usual."""
    if not issubclass(exc_type, ConnectionError):
        sys.__excepthook__(exc_type, exc, traceback)
