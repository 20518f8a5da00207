"""A sweep's runs on this machine: one after another, or --parallel N at a time with the CPU
threads split between them. Each run is train_sonar_with_t5.py in a process of its own, its
output in SWEEP/logs/NAME.log and its exit status in SWEEP/logs/NAME.exit.

Started again, the sweep skips what is done, resumes what was interrupted (--resume) and
reports failed runs without rerunning them unless asked (--rerun_failed). Ctrl-C or SIGTERM
reaches every run: each saves where it stands, no new run starts, and the sweep exits 130 or
143 like them.
"""
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from .plan import TOOLKIT
from .status import STOPPED, exit_file, log_file, run_status

TRAIN_SCRIPT = TOOLKIT / "train_sonar_with_t5.py"


def todo(plan, rerun_failed):
    """-> [(run, resume)] to start now, and [RunStatus] of the failed runs left alone."""
    starts, failed = [], []
    for run in plan.runs:
        status = run_status(plan, run)
        if status.state == "failed" and not rerun_failed:
            failed.append(status)
        elif status.state in ("pending", "interrupted", "failed"):
            starts.append((run, (plan.run_dir(run) / "last_model.pt").is_file()))
    return starts, failed


def run_command(plan, run, resume, threads):
    command = [sys.executable, str(TRAIN_SCRIPT), "--config", str(plan.config_file(run)),
               "--output_dir", str(plan.run_dir(run))]
    if resume:
        command.append("--resume")
    if threads and "num_threads" not in run.flags:
        command += ["--num_threads", str(threads)]
    return command


class LocalSweep:
    def __init__(self, plan, parallel=1, say=print):
        self.plan, self.parallel, self.say = plan, parallel, say
        # the CPU's threads shared out: each run's PyTorch takes its part, not all of them
        self.threads = max(1, (os.cpu_count() or 1) // parallel) if parallel > 1 else 0
        self.stop_signal = None
        self.running = {}  # run name -> Popen
        self.lock = threading.Lock()

    def run(self, starts):
        """Run these [(run, resume)]; -> {name: exit status} of the runs that ended."""
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGINT, signal.SIGTERM)}
        ended = {}
        try:
            with ThreadPoolExecutor(self.parallel) as pool:
                futures = {pool.submit(self._one, run, resume, i, len(starts)): run
                           for i, (run, resume) in enumerate(starts, 1)}
                pending = set(futures)
                while pending:  # in short waits: the signal handler runs in this thread
                    done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                    for future in done:
                        code = future.result()
                        if code is not None:
                            ended[futures[future].name] = code
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return ended

    def _stop(self, signum, frame):
        """Ctrl-C reached every run already (the terminal signals the whole process group);
        SIGTERM to the sweep alone is passed on. No run starts after this."""
        self.stop_signal = signum
        with self.lock:
            for process in self.running.values():
                if process.poll() is None and signum == signal.SIGTERM:
                    process.send_signal(signal.SIGTERM)
        self.say(f"sweep: {signal.Signals(signum).name}: the runs save and stop; the same "
                 "command resumes them")

    def _one(self, run, resume, index, total):
        with self.lock:
            if self.stop_signal is not None:
                return None
            log = log_file(self.plan, run)
            exit_file(self.plan, run).unlink(missing_ok=True)
            command = run_command(self.plan, run, resume, self.threads)
            with open(log, "a") as out:
                out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(command)}\n")
                out.flush()
                process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL)
            self.running[run.name] = process
        self.say(f"[{index}/{total}] {run.name}: {'resuming' if resume else 'started'} "
                 f"(log: {log})")
        start = time.time()
        code = process.wait()
        with self.lock:
            del self.running[run.name]
        exit_file(self.plan, run).write_text(f"{code}\n")
        status = run_status(self.plan, run)
        minutes = (time.time() - start) / 60
        if code == 0:
            bleu = "-" if status.best_bleu is None else f"{status.best_bleu:.2f}"
            self.say(f"[{index}/{total}] {run.name}: done in {minutes:.1f} min, best val "
                     f"BLEU {bleu}")
        elif code in STOPPED or code < 0:
            self.say(f"[{index}/{total}] {run.name}: stopped after {minutes:.1f} min "
                     f"({status.state}; the same command resumes it)")
        else:
            self.say(f"[{index}/{total}] {run.name}: failed ({status.note})")
        return code
