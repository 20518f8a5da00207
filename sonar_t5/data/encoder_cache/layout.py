"""Where the frozen-encoder caches are on disk, and the names of what each holds."""
import datetime
import os
import re
from pathlib import Path

CACHE_DIR_ENV = "SONAR_T5_CACHE_DIR"
CLEAR_HINT = "python -m sonar_t5.data.encoder_cache clear"
BUILDING = ".building-"  # CACHE_DIR/.building-KEY-HOST-PID: a build in progress
MARKER = ".sonar_t5_cache"  # in every directory a build makes: clear may remove it
KEY_PATTERN = re.compile(r"[0-9a-f]{24}")


def default_cache_dir():
    """$SONAR_T5_CACHE_DIR, else the user's cache directory: shared by every run."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sonar_t5" / "encoder_states"


def note_use(entry, used_by):
    """One line in used_by.txt; a read-only shared cache is fine without it."""
    try:
        with open(entry / "used_by.txt", "a", encoding="utf-8") as f:
            f.write(f"{now()}\t{Path(used_by).resolve()}\n")
    except OSError:
        pass


def size_text(nbytes):
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"


def now():
    return datetime.datetime.now().isoformat(timespec="seconds")
