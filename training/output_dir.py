"""The output directory: one run per directory, and --overwrite that never loses a run.

--overwrite moves the earlier run's files into .replaced_run/ once the data and model have
checked out. They are removed when the new run has its first checkpoint (drop()); an error,
Ctrl-C or divergence before that puts them back, so a failed start never leaves neither run.
"""
import shutil
from pathlib import Path

from common.errors import UserError

from .args import DEMO_DATA_DIR

REPLACED_DIR = ".replaced_run"


def check_output_dir(args):
    """Refuse to mix runs: a directory holding anything needs --resume or --overwrite.
    -> (last_model.pt to resume from or None, names that --overwrite will replace)."""
    out = Path(args.output_dir)
    last = out / "last_model.pt"
    if args.resume:
        if not last.is_file():
            raise UserError("nothing to resume: no last_model.pt", str(out),
                            "drop --resume to start a new run")
        for stale in out.glob(".*.tmp"):  # half-written by a run killed mid-save
            stale.unlink(missing_ok=True)
        return last, []
    held = sorted(p.name for p in out.iterdir() if p.name != DEMO_DATA_DIR) if out.is_dir() else []
    if held and not args.overwrite:
        raise UserError(f"output directory is not empty (holds {', '.join(held[:4])})",
                        str(out), "pass --resume to continue that run, --overwrite to replace "
                                  "it, or choose another --output_dir")
    return None, held


class ReplacedRun:
    """`with ReplacedRun(dir, names, is_main) as old_run:` sets the earlier run aside for the
    block; old_run.drop() once the new run has a checkpoint; a failure before that restores it.
    Nothing to do for a new directory, for --resume, or on processes other than the first."""

    def __init__(self, output_dir, names, is_main):
        self.out, self.names, self.is_main = Path(output_dir), names, is_main
        self.aside = self.out / REPLACED_DIR
        self.replacing = is_main and bool(names)

    def __enter__(self):
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
        if self.replacing:
            self._set_aside()
        return self

    def __exit__(self, error_type, error, traceback):
        if error_type is not None and self.replacing:  # errors, Ctrl-C, exit(1) on divergence
            self._restore()
        return False

    def drop(self):
        if self.is_main:
            shutil.rmtree(self.aside, ignore_errors=True)

    def _set_aside(self):
        if self.aside.exists():  # a replacement that never reached a checkpoint: partial files
            for name in self.names:
                if name != REPLACED_DIR:
                    _remove(self.out / name)
            return
        self.aside.mkdir()
        for name in self.names:
            (self.out / name).rename(self.aside / name)

    def _restore(self):
        """The new run stopped before its first checkpoint: its files go, the earlier run's
        return. After drop() there is nothing to restore."""
        if not self.aside.is_dir():
            return
        for path in self.out.iterdir():
            if path.name not in (REPLACED_DIR, DEMO_DATA_DIR):
                _remove(path)
        for path in self.aside.iterdir():
            path.rename(self.out / path.name)
        self.aside.rmdir()


def _remove(path):
    shutil.rmtree(path) if path.is_dir() else path.unlink()
