"""See and clear the frozen-encoder caches:

    python -m sonar_t5.data.encoder_cache list
    python -m sonar_t5.data.encoder_cache clear KEY [KEY ...]     # or: clear --all

Only directories this toolkit made are caches (the marker a build writes first, or a
meta.json it can parse that names the directory); anything else in the cache directory is
listed apart and never removed.
"""
import argparse
import fcntl
import json
import os
import shutil
import sys
from pathlib import Path

from sonar_t5.common.errors import UserError, cli_main

from .layout import BUILDING, CACHE_DIR_ENV, KEY_PATTERN, MARKER, default_cache_dir, size_text


def entries(root):
    """-> ([(name, meta or None for an unfinished build, bytes on disk, runs that used it)],
    [names of the other things in root]): the caches are the directories this toolkit made."""
    found, foreign = [], []
    for path in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        if path.is_file() and path.suffix == ".lock" and KEY_PATTERN.fullmatch(path.stem):
            continue  # a build lock (an empty file that a waiting build may hold open)
        meta = made_here(path)
        if meta is False:
            foreign.append(path.name)
            continue
        size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
        used = path / "used_by.txt"
        runs = used.read_text().splitlines() if meta is not None and used.is_file() else []
        found.append((path.name, meta, size, runs))
    return found, foreign


def made_here(path):
    """-> False unless `path` is a directory a build made: then its meta ({} when damaged),
    or None for an unfinished build. The proof is the marker a build writes first, or (a
    cache of an older version) a meta.json that parses and names the directory's key."""
    if not path.is_dir() or path.is_symlink():
        return False
    building = path.name.startswith(BUILDING)
    key = path.name[len(BUILDING):].split("-")[0] if building else path.name
    if not KEY_PATTERN.fullmatch(key):
        return False
    try:
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = None
    if not isinstance(meta, dict) or meta.get("key") != key:
        meta = None
    if meta is None and not (path / MARKER).is_file():
        return False
    return None if building else (meta or {})


def list_caches(root):
    found, foreign = entries(root)
    print(f"{root}: {len(found)} cache{'s' * (len(found) != 1)}, "
          f"{size_text(sum(size for _, _, size, _ in found))}")
    for name, meta, size, runs in found:
        if meta is None:
            print(f"  {name}  {size_text(size)}  unfinished build (killed?), or one running")
            continue
        if not meta:
            print(f"  {name}  {size_text(size)}  damaged (meta.json unreadable): clear it")
            continue
        last = runs[-1].split("\t") if runs else None
        print(f"  {name}  {size_text(size)}  {meta.get('samples')} samples, "
              f"{meta.get('resampler_input', meta.get('states'))} {meta.get('dim')}-d {meta.get('dtype')}, "
              f"{meta.get('encoder_kind')} encoder {str(meta.get('weights_sha256'))[:12]}, "
              f"max_frames {meta.get('max_frames')}, {meta.get('precision')}\n"
              f"      {meta.get('manifest')}\n"
              f"      built {meta.get('built')} in {meta.get('build_seconds')} s; "
              + (f"used by {len(runs)} run(s), last {last[0]} {last[1]}" if last
                 else "no run noted"))
    if foreign:
        print(f"also here, not caches (never cleared): {', '.join(foreign)}")


def clear_caches(root, names):
    """Remove the named caches (all with names == []), each under its build lock so a build
    in progress is left alone. A run reading a removed cache keeps its open file. Only
    directories this toolkit made are removed; whatever else is in root stays."""
    found, foreign = entries(root)
    caches = {name for name, *_ in found}
    for name in names:
        if name in foreign:
            raise UserError(f"{name} is not a cache this toolkit made (no marker, no meta.json "
                            "naming it); nothing was removed", str(Path(root) / name),
                            "remove it yourself if you meant to")
        if name not in caches:
            raise UserError(f"no cache named {name}", str(root),
                            "see the names with: python -m sonar_t5.data.encoder_cache list")
    freed = 0
    for name in names or sorted(caches):
        key = name[len(BUILDING):].split("-")[0] if name.startswith(BUILDING) else name
        fd = os.open(Path(root) / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"  {name}: a build of it is running; left alone")
            os.close(fd)
            continue
        try:
            path = Path(root) / name
            freed += sum(f.stat().st_size for f in path.iterdir() if f.is_file())
            shutil.rmtree(path)  # the empty lock file stays: a waiting build holds it open
            print(f"  removed {name}")
        finally:
            os.close(fd)
    print(f"freed {size_text(freed)} in {root}")
    if foreign and not names:
        print(f"left alone, not caches this toolkit made: {', '.join(foreign)}")


@cli_main
def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m sonar_t5.data.encoder_cache",
        description="See and clear the frozen-encoder caches that training and validation "
                    "share.")
    parser.add_argument("command", choices=("list", "clear"))
    parser.add_argument("names", nargs="*", help="clear: the caches to remove (see list)")
    parser.add_argument("--all", action="store_true", help="clear: remove every cache")
    parser.add_argument("--encoder_cache_dir", default=None,
                        help=f"default: ${CACHE_DIR_ENV}, else {default_cache_dir()}")
    args = parser.parse_args(argv)
    root = Path(args.encoder_cache_dir or default_cache_dir())
    if args.command == "list":
        list_caches(root)
    elif args.names or args.all:
        clear_caches(root, args.names)
    else:
        raise UserError("clear needs cache names or --all", "command line",
                        "see the names with: python -m sonar_t5.data.encoder_cache list")


if __name__ == "__main__":
    sys.exit(main())
