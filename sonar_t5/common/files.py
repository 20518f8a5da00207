"""Files written so that a crash mid-write leaves the previous version intact; Ctrl-C and
SIGTERM wait while one is written."""
import json
import os
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from .errors import Terminated, UserError


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C, and what schedulers send


@contextmanager
def stops_deferred():
    """Ctrl-C or SIGTERM inside the block takes effect when it ends, so a write is never cut
    short (torch.save interrupted half-way raises its own error instead): it then goes to the
    handler the block found (which raises, or under torchrun notes it for the processes to
    agree on)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    # Signals already ignored (after a first Ctrl-C, while its save runs) stay ignored.
    previous = {s: signal.signal(s, lambda signum, _: received.append(signum))
                for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
    if received:
        handler = previous.get(received[0])
        if callable(handler):
            handler(received[0], None)
        else:  # the default action, as an exception that the callers handle
            raise Terminated if received[0] == signal.SIGTERM else KeyboardInterrupt


def _default_permissions():
    """What a plain open() would give a new file: 0666 less the umask (mkstemp gives 0600,
    unreadable to colleagues on a shared server)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_PERMISSIONS = _default_permissions()


def atomic_write(path, write_fn, binary=True):
    """Call write_fn(file) on a temp file beside `path`, fsync it, then rename over `path`:
    every output file (checkpoints, JSON, PNG, TSV, Markdown, LaTeX) is written here.

    os.replace is atomic on POSIX, so readers see the old file or the new one, never half.
    A failure (full disk, say) removes the temp file and leaves `path` untouched.
    """
    with stops_deferred():
        _atomic_write(Path(path), write_fn, binary)


_held_renames = None  # inside written_together(): [(temp file, path)] awaiting their rename


@contextmanager
def written_together():
    """The atomic_write()s inside the block are written and fsynced as usual, but renamed into
    place only when the block ends, one right after another: files that must agree (a
    checkpoint and the history beside it) change together, microseconds apart rather than a
    checkpoint's write time apart, so a kill finds both old or both new. An error in the
    block (a full disk) removes the written temp files and changes none."""
    global _held_renames
    with stops_deferred():
        _held_renames = []
        try:
            yield
            for tmp, path in _held_renames:
                os.replace(tmp, path)
        except BaseException:
            for tmp, _ in _held_renames:
                Path(tmp).unlink(missing_ok=True)
            raise
        finally:
            _held_renames = None


def _atomic_write(path, write_fn, binary):
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    writes = None
    try:
        os.fchmod(fd, FILE_PERMISSIONS)
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            writes = _KeepingWriteErrors(f)
            write_fn(writes)
            f.flush()
            os.fsync(f.fileno())
        if _held_renames is not None:  # inside written_together(): renamed when the block ends
            _held_renames.append((tmp, path))
        else:
            os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        # torch's zip writer reports a failed write (a full disk) as "unexpected pos"
        failed = error if isinstance(error, OSError) else writes and writes.error
        if not failed:
            raise
        raise UserError(f"could not write {path.name}: {failed.strerror or failed}", str(path),
                        "free disk space, or write to another place; the previous file is "
                        "unchanged") from error


class _KeepingWriteErrors:
    """A file whose write errors are kept, for writers that replace them with their own."""

    def __init__(self, file):
        self._file, self.error = file, None

    def write(self, data):
        try:
            return self._file.write(data)
        except OSError as error:
            self.error = error
            raise

    def __getattr__(self, name):
        return getattr(self._file, name)


def write_json(path, obj):
    atomic_write(path, lambda f: f.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n"),
                 binary=False)


def read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise UserError("file not found", str(path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"not valid JSON ({error})", str(path),
                        "the file is damaged; rerun what wrote it") from None


def check_output_dir_usable(directory, flag):
    """Before long work: `directory` is a directory that takes files, or can be made one.
    Creates nothing."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise UserError(f"{flag} is a file, not a directory", str(path),
                        "choose another path")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} lies under a file, not a directory", str(existing),
                        "choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} is not writable", str(existing),
                        "choose a directory you can write to")
