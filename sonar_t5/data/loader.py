"""torch's DataLoader, with worker processes that leave stop signals to the main process and
that end with it, whatever ended it.

Ctrl-C in a terminal, Slurm's scancel, preemption and time limit, `timeout`, `docker stop` and
systemd signal every process of the job, DataLoader workers included. A worker killed by
SIGTERM makes PyTorch raise "DataLoader worker (pid N) is killed by signal" in the main
process, in the middle of its graceful stop (the save, the resume line, exit 143). So the
workers ignore SIGINT and SIGTERM: the main process alone handles the stop, and ends its
workers itself (they also end when it dies). The two signals are blocked while workers start,
so none lands between a worker's fork and its ignoring them; one that arrives then is
delivered to the main process as soon as the workers are up.

Ending them is then this module's job, since a worker that ignores SIGTERM outlives
Process.terminate(). PyTorch calls that for a worker that does not leave when asked, and
multiprocessing calls it at the interpreter's exit for every child still there, then waits
for them: after an error that left the workers waiting for work (a bad file read in a worker,
an exception in the training step) the run printed its error and waited forever. So:
- at exit, every loader's workers are shut down as PyTorch shuts them down when a loader is
  done (told to leave, taken off its watch for dead workers, joined), before multiprocessing's
  own clean-up runs;
- a worker's terminate() is SIGKILL: it holds nothing that needs cleaning up (its batches are
  for the main process);
- a main process killed outright (kill -9, the out-of-memory killer) takes its workers with
  it at once (Linux's parent-death signal): PyTorch's own watchdog notices only within 5 s,
  and meanwhile the workers hold what they inherited, the run directory's lock among them,
  so that a --resume started at once was refused as "in use by another run".
"""
import atexit
import ctypes
import functools
import multiprocessing.context
import multiprocessing.popen_fork
import os
import signal
import sys
import weakref

import torch

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
_running = weakref.WeakSet()  # the iterators whose workers may still be up


class SignalSafeDataLoader(torch.utils.data.DataLoader):
    def __init__(self, *args, worker_init_fn=None, **kwargs):
        if kwargs.get("num_workers"):
            kwargs["multiprocessing_context"] = WorkerContext()
        super().__init__(*args, worker_init_fn=functools.partial(
            _leave_stops_to_main, worker_init_fn, os.getpid()), **kwargs)

    def __iter__(self):
        if self.num_workers == 0:
            return super().__iter__()
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            iterator = super().__iter__()  # forks the workers (the first time)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        _running.add(iterator)
        return iterator


@atexit.register  # registered after multiprocessing's clean-up (torch imported it): runs first
def _end_workers():
    for iterator in list(_running):
        iterator._shutdown_workers()  # what the iterator's own __del__ calls


class KilledOnTerminate(multiprocessing.popen_fork.Popen):
    def terminate(self):
        self.kill()  # SIGTERM is ignored in a worker


class WorkerProcess(multiprocessing.context.ForkProcess):
    @staticmethod
    def _Popen(process_obj):  # what Process.terminate() and multiprocessing's exit both reach
        return KilledOnTerminate(process_obj)


class WorkerContext(multiprocessing.context.ForkContext):
    Process = WorkerProcess


def _leave_stops_to_main(then, main_pid, worker_id):
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)  # also drops one that arrived while blocked
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != main_pid:  # it died before the line above
            os._exit(1)
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
