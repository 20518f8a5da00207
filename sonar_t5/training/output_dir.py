"""The output directory: one run per directory, locked while it runs, and never a run lost.

`with OutputDir(OutputSettings.from_args(args), is_main) as out:` takes the directory for
this run:
- it is locked (a second run into it gets a one-line error);
- a directory holding a run needs --resume or --overwrite;
- --overwrite sets the earlier run's files aside in .replaced_run/ once the data and model
  have checked out (set_aside_old_run), and removes them when the new run has its first
  checkpoint (checkpoint_written). An error, Ctrl-C or SIGTERM before that puts them back,
  so a failed start never leaves neither run. A run killed (kill -9) in between leaves
  .replaced_run/ behind; the next start puts it back and says so.
- a directory this run created is removed again if nothing came of the run; the logs of a run
  that stopped before its first checkpoint (train_log.jsonl, tensorboard/) go with it, as
  nothing can resume them. Only logs this toolkit can prove it wrote are removed: a new run
  first lists the log names it is about to create in .run_logs (a marker), and clean-up
  removes those names alone. A user's own tensorboard/ or train_log.jsonl is never touched:
  the start is refused instead ("not empty").
"""
import errno
import fcntl
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sonar_t5.common.errors import UserError
from sonar_t5.common.files import write_json
from sonar_t5.common.flag_views import FlagView
from sonar_t5.evaluation.validate import RESULTS_DIR

from .args import DEMO_DATA_DIR
from .tracking import LOG_NAME, RUN_LOGS, TENSORBOARD_DIR

REPLACED_DIR = ".replaced_run"
LOCK_NAME = ".lock"
LOGS_MARKER = ".run_logs"  # the logs a run without a checkpoint yet created (see above)
CHECKPOINTS = ("last_model.pt", "best_model.pt")
RUN_FILES = (*CHECKPOINTS, "training_history.json", "config.json", LOG_NAME)  # written whole


@dataclass(frozen=True)
class OutputSettings(FlagView):
    """The flags that decide what happens to the output directory."""
    output_dir: str
    resume: bool
    overwrite: bool
    report_to: list  # a --resume continues these logs: they must be writable
    skip_final_scoring: bool  # otherwise the end of training writes results/


class OutputDir:
    def __init__(self, settings, is_main):
        """settings: OutputSettings; is_main: the process that writes files."""
        self.settings, self.is_main = settings, is_main
        self.path = Path(settings.output_dir)
        self.aside = self.path / REPLACED_DIR
        self.created = not self.path.exists()
        self.resume_from, self.old_run = None, []
        self.replacing = False  # the earlier run is in .replaced_run/, the new one has no checkpoint
        self._lock = None

    # -- entering: lock, tidy up after a killed run, decide ----------------------------------
    def __enter__(self):
        if self.is_main:
            self._take_lock()
            self._put_back_after_a_kill()
            dropped = self._drop_logs_without_checkpoint()
            if dropped:
                print(f"note: removed {', '.join(dropped)} in {self.path}: the logs of a run "
                      "that stopped before its first checkpoint")
        try:
            self.resume_from, self.old_run = self._check()
        except BaseException:
            self._release()
            raise
        return self

    def _take_lock(self):
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.path / LOCK_NAME, "a+")
        except OSError as error:
            self.created = False
            raise UserError(f"cannot use the output directory: {error.strerror or error}",
                            str(self.path), "choose a directory you can write to (not a file "
                                            "or a path under one)") from None
        try:
            # a POSIX record lock, not flock: it belongs to this process alone, so DataLoader
            # workers (forked, sharing its files) never hold it, not even for the moment they
            # outlive a main process killed outright
            fcntl.lockf(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            self._lock.seek(0)
            holder = self._lock.read().strip() or "another process"
            self._lock.close()
            self._lock, self.created = None, False
            raise UserError(f"the output directory is in use by another run ({holder})",
                            str(self.path), "wait for it to finish, or choose another "
                                            "--output_dir") from None
        note = f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}".encode()
        try:  # unbuffered: a failed write leaves nothing for close() to retry
            os.ftruncate(self._lock.fileno(), 0)
            written = os.write(self._lock.fileno(), note)
            if written < len(note):
                raise OSError(errno.ENOSPC, f"{written} of {len(note)} bytes written: the "
                                            "disk is full")
        except OSError as error:  # a full disk: the lock is held, its note cannot be written
            self._release()
            raise UserError(f"cannot write the run's lock file ({error.strerror or error})",
                            str(self.path / LOCK_NAME),
                            "free disk space, or choose another --output_dir; nothing was "
                            "changed") from None

    def _put_back_after_a_kill(self):
        """A run killed while replacing an earlier one leaves the earlier run in .replaced_run/.
        Without a checkpoint of its own, the killed run is dropped and the earlier one comes
        back; with one (killed right after its first save), the earlier run goes."""
        if not self.aside.is_dir():
            return
        if any((self.path / name).is_file() for name in CHECKPOINTS):
            shutil.rmtree(self.aside)
            print(f"note: removed {self.aside}: the run that replaced it had reached a "
                  "checkpoint before it was killed")
            return
        self._restore()
        print(f"note: put back the earlier run from {self.aside}: an --overwrite run was "
              "killed before its first checkpoint")

    def _check(self):
        """-> (last_model.pt to resume from or None, names --overwrite will replace)."""
        settings, out = self.settings, self.path
        last = out / "last_model.pt"
        if settings.resume:
            if not last.is_file():
                raise UserError("nothing to resume: no last_model.pt", str(out),
                                "drop --resume to start a new run")
            if self.is_main:
                self._check_writable()
                for name in RUN_FILES:  # half-written by a run killed mid-save
                    for stale in out.glob(f".{name}.*.tmp"):  # atomic_write's temp names
                        stale.unlink(missing_ok=True)
            return last, []
        held = sorted(p.name for p in out.iterdir()
                      if p.name not in (DEMO_DATA_DIR, LOCK_NAME)) if out.is_dir() else []
        if held and not settings.overwrite:
            raise UserError(f"output directory is not empty (holds {', '.join(held[:4])})",
                            str(out), "pass --resume to continue that run, --overwrite to "
                                      "replace it, or choose another --output_dir")
        return None, held

    def _check_writable(self):
        """--resume, before any work: what the run will write to is writable (the directory,
        for the checkpoints; the logs it continues). os.access sees read-only file systems
        too."""
        logs = [self.path / LOG_NAME]
        if "tensorboard" in self.settings.report_to:
            board = self.path / TENSORBOARD_DIR
            logs += [board, *(p for p in board.rglob("*"))] if board.is_dir() else []
        results = self.path / RESULTS_DIR  # where the end of training writes its scores
        if not self.settings.skip_final_scoring:
            if results.exists() and not results.is_dir():
                raise UserError(f"cannot resume: {RESULTS_DIR} is a file, where the end of "
                                "training writes its scores", str(results),
                                "move the file away, or pass --skip_final_scoring")
            if results.is_dir():
                logs += [results, *(p for p in results.rglob("*"))]
        for path in [self.path, *logs]:
            if path.exists() and not os.access(path, os.W_OK):
                raise UserError("cannot resume: the run's files are read-only", str(path),
                                "make them writable (chmod u+w), or copy the run elsewhere "
                                "and resume there")

    def _drop_logs_without_checkpoint(self):
        """-> the log files removed: those a run without a checkpoint wrote (nothing can
        resume them, and they would block the next start), as its .run_logs marker lists
        them. Without the marker nothing is removed."""
        marker = self.path / LOGS_MARKER
        if not marker.is_file() or any((self.path / n).is_file() for n in CHECKPOINTS):
            return []
        try:
            listed = json.loads(marker.read_text(encoding="utf-8"))["logs"]
        except (OSError, ValueError, KeyError, TypeError):
            return []  # not a marker this toolkit wrote whole: leave everything
        dropped = [name for name in RUN_LOGS if name in listed and (self.path / name).exists()]
        for name in dropped:
            _remove(self.path / name)
        marker.unlink()
        return dropped

    # -- the run ---------------------------------------------------------------------------
    def set_aside_old_run(self):
        """Once data and model are known good. --overwrite: the earlier run moves aside. A new
        run: .run_logs lists the logs it is about to create, so that clean-up after a stop
        before its first checkpoint removes those and nothing else."""
        if not self.is_main or self.resume_from:
            return
        if self.old_run:
            self.aside.mkdir()
            for name in self.old_run:
                (self.path / name).rename(self.aside / name)
            self.replacing = True
        new_logs = [name for name in RUN_LOGS if not (self.path / name).exists()]
        write_json(self.path / LOGS_MARKER, {"written_by": "sonar-t5 train_sonar_with_t5.py",
                                             "pid": os.getpid(), "logs": new_logs})

    def checkpoint_written(self):
        """The new run now stands on its own: the earlier one goes, and its logs belong to a
        run with a checkpoint (never removed)."""
        if not self.is_main:
            return
        if self.replacing:
            shutil.rmtree(self.aside, ignore_errors=True)
            self.replacing = False
        (self.path / LOGS_MARKER).unlink(missing_ok=True)

    # -- leaving ---------------------------------------------------------------------------
    def __exit__(self, error_type, error, traceback):
        if error_type is not None and self.replacing:  # errors, Ctrl-C, exit(1) on divergence
            self._restore()
            print(f"stopped before the new run's first checkpoint: the earlier run is back "
                  f"in {self.path}", flush=True)
        elif error_type is not None and self.is_main:
            self._drop_logs_without_checkpoint()
        self._release()
        return False

    def _restore(self):
        """The new run stopped before its first checkpoint: what it wrote goes, the earlier
        run's files return. Only the names this toolkit writes are removed: a file anyone else
        added meanwhile stays, and an earlier file whose name it took comes back beside it as
        NAME.earlier_run (said)."""
        for name in (*RUN_FILES, *RUN_LOGS, LOGS_MARKER):
            path = self.path / name
            if path.exists() or path.is_symlink():
                _remove(path)
            for temp in self.path.glob(f".{name}.*.tmp"):  # a save cut short (atomic_write's)
                temp.unlink(missing_ok=True)
        for path in self.aside.iterdir():
            target = self.path / path.name
            if target.exists() or target.is_symlink():
                target = _free_name(self.path / f"{path.name}.earlier_run")
                print(f"note: {path.name} was added to {self.path} while the new run started; "
                      f"the earlier run's {path.name} is back as {target.name}")
            path.rename(target)
        self.aside.rmdir()
        self.replacing = False

    def _release(self):
        if self._lock is None:
            return
        (self.path / LOCK_NAME).unlink(missing_ok=True)
        self._lock.close()  # closing releases the lock
        self._lock = None
        if self.created and not any(self.path.iterdir()):
            self.path.rmdir()  # a directory this run made, and nothing came of the run


def _free_name(path):
    """path, or path.1, path.2, ...: the first that does not exist."""
    candidate, n = path, 0
    while candidate.exists() or candidate.is_symlink():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def _remove(path):
    shutil.rmtree(path) if path.is_dir() else path.unlink()
