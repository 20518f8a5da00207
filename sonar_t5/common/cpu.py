"""Sharing the CPU with other jobs. Imports nothing heavy: it must run before torch loads.

PyTorch's CPU kernels run on OpenMP threads, one per core, and between parallel regions GNU
OpenMP keeps its threads spinning for a while before they sleep. With another CPU-bound job on
the same cores, the spinning threads of both jobs take cores from each other and every
parallel region waits for a descheduled peer. Measured on 2 cores (benchmarks/cpu_sharing.py),
two demo trainings side by side took 4x as long per epoch as one alone, where sharing fairly
costs 2x. Threads that sleep as soon as they wait (OMP_WAIT_POLICY=PASSIVE) remove that, but
cost a run that has the machine to itself about a third. So the policy is chosen at start:
passive when other work is running on the CPUs, OpenMP's default otherwise. OMP_WAIT_POLICY
or GOMP_SPINCOUNT set by the user win, SONAR_T5_CPU_SHARING=off keeps OpenMP's default
always; --num_threads sets the thread count.
"""
import os
import time


def other_runnable_threads(samples=5, interval=0.02):
    """Threads of other processes running or waiting for a CPU now (the median of a few
    reads of /proc/loadavg's runnable count, less this process's one thread); 0 where the
    count cannot be read."""
    counts = []
    for _ in range(samples):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]))
        except (OSError, IndexError, ValueError):
            return 0
        time.sleep(interval)
    return max(0, sorted(counts)[len(counts) // 2] - 1)


def wait_politely_if_shared():
    """Set OMP_WAIT_POLICY=PASSIVE when other work is running on the CPUs, before torch
    (and its OpenMP runtime, which reads the policy once) is loaded. -> whether it did."""
    if ("OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
            or os.environ.get("SONAR_T5_CPU_SHARING") == "off"):
        return False
    if other_runnable_threads() < 1:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    print("note: other jobs are running on the CPUs: OpenMP threads wait passively "
          "(OMP_WAIT_POLICY=PASSIVE; set it to ACTIVE to override)", flush=True)
    return True
