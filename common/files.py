"""Files written so that a crash mid-write leaves the previous version intact."""
import json
import os
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


@contextmanager
def ctrl_c_deferred():
    """Ctrl-C inside the block takes effect when it ends, so a write is never cut short
    (torch.save interrupted half-way raises its own error instead of KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *_: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous or signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


def atomic_write(path, write_fn, binary=True):
    """Call write_fn(file) on a temp file beside `path`, fsync it, then rename over `path`.

    os.replace is atomic on POSIX, so readers see the old file or the new one, never half.
    A failure (full disk, say) removes the temp file and leaves `path` untouched.
    """
    with ctrl_c_deferred():
        _atomic_write(Path(path), write_fn, binary)


def _atomic_write(path, write_fn, binary):
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"could not write {path.name}: {error.strerror or error}", str(path),
                        "free disk space or choose another --output_dir; the previous file "
                        "is unchanged") from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
