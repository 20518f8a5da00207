"""A sweep file, expanded into its runs and checked before anything starts.

A sweep file is YAML:

    output_dir: runs/bridges          # the sweep directory (default: runs/sweeps/FILE_STEM)
    base:                             # the flags every run shares; config: a config file's
      config: configs/demo.yaml       # flags first, the others over them
      epochs: 12
    variants:                         # optional: named settings that are not a grid
      perceiver: {}
      projection: {bridge: projection, resampler_input: pooled}
    axes:                             # crossed with each other and with every variant
      seed: [1, 2, 3]
    baseline: projection              # the group every other group is tested against

Keys are train_sonar_with_t5.py's flags without dashes, values checked as a config file's.
A run is one variant with one value of each axis; its directory, under the sweep directory,
is named from what it sets: the variant's name, then `flag=value` for each axis
(`projection,seed=2`, `bridge=projection,freeze_encoder=true,seed=1`). A group is a run less
its seed: its runs are the seeds the results table pools and the tests compare.
"""
import hashlib
import itertools
import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sonar_t5.common.config_file import convert, read_config_file, read_text, refuse_aliases
from sonar_t5.common.errors import UserError
from sonar_t5.common.files import atomic_write, write_json
from sonar_t5.training.args import build_parser, parse_args

TOOLKIT = Path(__file__).resolve().parents[2]  # the checkout: train_sonar_with_t5.py's folder
PLAN_FILE = "plan.json"
TASKS_FILE = "tasks.tsv"  # run index -> name, for launch/slurm.sbatch's array tasks
CONFIGS_DIR, LOGS_DIR, AGGREGATE_DIR = "configs", "logs", "aggregate"
RESERVED = {CONFIGS_DIR, LOGS_DIR, AGGREGATE_DIR}
SWEEP_KEYS = ("output_dir", "base", "variants", "axes", "baseline")
# Set by the sweep for each run, never by its file.
SWEEP_SETS = {"output_dir": "the sweep names each run's directory",
              "resume": "the sweep resumes interrupted runs itself",
              "overwrite": "a sweep never replaces a run; remove its directory to redo it"}
NO_SEEDS = "base"  # the group's name when the sweep has neither variants nor other axes
VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


@dataclass
class Run:
    name: str  # its directory under the sweep directory
    group: str  # the run less its seed
    overrides: dict  # what its variant and axes set
    flags: dict  # every flag the sweep gives it: the base's, then the overrides
    lines: dict = field(default_factory=dict)  # flag -> the sweep file's line that set it
    epochs: int = None  # as training resolves its flags (--demo and configs set defaults)

    def describe(self):
        return {"name": self.name, "group": self.group, "overrides": self.overrides,
                "flags": self.flags, "epochs": self.epochs}


@dataclass
class Plan:
    source: str  # the sweep file
    sweep_dir: Path
    runs: list
    baseline: str

    def groups(self):
        """{group: [Run, ...]} in the file's order."""
        found = {}
        for run in self.runs:
            found.setdefault(run.group, []).append(run)
        return found

    def run_dir(self, run):
        return self.sweep_dir / run.name

    def config_file(self, run):
        return self.sweep_dir / CONFIGS_DIR / f"{run.name}.yaml"


def read_plan(path, output_dir=None, processes=1):
    """The sweep file at path -> Plan, every run's flags checked as training checks them
    (processes: how many train each run, for --global_batch_size). output_dir overrides the
    file's."""
    text = read_text(path)
    try:
        refuse_aliases(text, path)
        root = yaml.compose(text)
        sweep = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise UserError(f"not valid YAML ({getattr(error, 'problem', None) or error})",
                        f"{path}:{mark.line + 1}" if mark else str(path), "fix the file") from None
    if not isinstance(sweep, dict):
        raise UserError("a sweep file is a mapping (base, axes, variants, baseline)", str(path),
                        "see launch/sweep/plan.py's example")
    lines = line_numbers(root)
    unknown = [k for k in sweep if k not in SWEEP_KEYS]
    if unknown:
        raise UserError(f"unknown key '{unknown[0]}'", where(path, lines, (unknown[0],)),
                        f"a sweep file has {', '.join(SWEEP_KEYS)}")
    parser = build_parser()
    base, base_lines = base_flags(sweep.get("base") or {}, path, lines, parser)
    variants = read_variants(sweep.get("variants"), path, lines, parser)
    axes = read_axes(sweep.get("axes"), path, lines, parser)
    if not variants and not axes:
        raise UserError("no runs: the sweep has neither axes nor variants", str(path),
                        "add e.g. axes: {seed: [1, 2, 3]}")
    sweep_dir = Path(output_dir or sweep.get("output_dir") or Path("runs/sweeps") / Path(path).stem)
    runs = expand(base, base_lines, variants or {None: ({}, {})}, axes)
    check_names(runs, path)
    baseline = sweep.get("baseline")
    groups = list(dict.fromkeys(run.group for run in runs))
    if baseline is None:
        baseline = groups[0]
    elif str(baseline) not in groups:
        raise UserError(f"baseline '{baseline}' is not a group of this sweep",
                        where(path, lines, ("baseline",)), f"its groups: {', '.join(groups)}")
    plan = Plan(str(path), sweep_dir, runs, str(baseline))
    for run in runs:
        run.epochs = check_run(plan, run, path, processes).epochs
    return plan


def line_numbers(root):
    """{(key, key, ...): line} for every mapping key of the YAML document."""
    found = {}

    def walk(node, keys):
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                found[(*keys, key.value)] = key.start_mark.line + 1
                walk(value, (*keys, key.value))

    walk(root, ())
    return found


def where(path, lines, keys):
    line = lines.get(tuple(keys))
    return f"{path}:{line}" if line else str(path)


def flag_values(mapping, path, lines, keys, parser):
    """A mapping of flag: value (base, a variant) -> ({dest: value}, {dest: line}), each value
    converted and checked as a config file's."""
    if not isinstance(mapping, dict):
        raise UserError("expected a mapping of flag: value", where(path, lines, keys),
                        "write e.g. {bridge: projection}")
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    values, found_lines = {}, {}
    for key, value in mapping.items():
        at = where(path, lines, (*keys, key))
        dest = flag_dest(key, actions, at)
        values[dest] = convert(key, value, actions[dest], at)
        found_lines[dest] = at
    return values, found_lines


def flag_dest(key, actions, at):
    name = str(key).lstrip("-").replace("-", "_")
    if name in SWEEP_SETS:
        raise UserError(f"'{key}' is set by the sweep ({SWEEP_SETS[name]})", at)
    if name not in actions or name in ("help", "config"):
        raise UserError(f"unknown flag '{key}'", at, "keys are train_sonar_with_t5.py's flags "
                                                    "without dashes (see its --help)")
    return name


def base_flags(base, path, lines, parser):
    """The base: a config file's flags (its `config` key), then its own over them."""
    if not isinstance(base, dict):
        raise UserError("base must be a mapping of flag: value", where(path, lines, ("base",)))
    base = dict(base)
    from_file, file_lines = {}, {}
    config = base.pop("config", None)
    if config is not None:
        from_file = read_config_file(config, parser)
        from_file.pop("output_dir", None)  # a run's own directory: the sweep names each run's
        file_lines = {k: str(config) for k in from_file}
        for key in ("resume", "overwrite"):
            if key in from_file:
                raise UserError(f"the base's config file sets '{key}' ({SWEEP_SETS[key]})",
                                str(config), "remove it from that file, or use another")
    own, own_lines = flag_values(base, path, lines, ("base",), parser)
    return {**from_file, **own}, {**file_lines, **own_lines}


def read_variants(variants, path, lines, parser):
    """{name: ({dest: value}, {dest: line})}, in the file's order."""
    if variants is None:
        return {}
    if not isinstance(variants, dict) or not variants:
        raise UserError("variants must be a mapping of name: {flag: value}",
                        where(path, lines, ("variants",)))
    found = {}
    for name, flags in variants.items():
        at = where(path, lines, ("variants", name))
        if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name) or name in RESERVED:
            raise UserError(f"variant name {name!r} cannot name a directory", at,
                            "use letters, digits and _ . + - (not " + ", ".join(RESERVED) + ")")
        found[name] = flag_values(flags or {}, path, lines, ("variants", name), parser)
    return found


def read_axes(axes, path, lines, parser):
    """{dest: [(value, line), ...]}: the values each axis takes."""
    if axes is None:
        return {}
    if not isinstance(axes, dict):
        raise UserError("axes must be a mapping of flag: [values]", where(path, lines, ("axes",)))
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    found = {}
    for key, values in axes.items():
        at = where(path, lines, ("axes", key))
        dest = flag_dest(key, actions, at)
        if not isinstance(values, list) or not values:
            raise UserError(f"axis '{key}' needs a list of values", at,
                            f"write e.g. {key}: [a, b]")
        found[dest] = [(convert(key, value, actions[dest], at), at) for value in values]
    return found


def expand(base, base_lines, variants, axes):
    """Every variant with every combination of the axes' values -> [Run]."""
    runs = []
    for variant, (overrides, variant_lines) in variants.items():
        for combination in itertools.product(*axes.values()):
            chosen = dict(zip(axes, (value for value, _ in combination)))
            chosen_lines = dict(zip(axes, (line for _, line in combination)))
            group = [variant] if variant else []
            group += [f"{k}={value_text(v)}" for k, v in chosen.items() if k != "seed"]
            group_name = ",".join(group) or NO_SEEDS
            name = ",".join(group + ([f"seed={chosen['seed']}"] if "seed" in chosen else []))
            runs.append(Run(name or group_name, group_name, {**overrides, **chosen},
                            {**base, **overrides, **chosen},
                            {**base_lines, **variant_lines, **chosen_lines}))
    return runs


def value_text(value):
    """A flag's value in a directory name: short and stable (1e-4 -> 0.0001, paths with _)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "+".join(map(value_text, value))
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", str(value))


def check_names(runs, path):
    seen = {}
    for run in runs:
        if run.name in seen:
            raise UserError(f"two runs map to one directory '{run.name}' ({describe(seen[run.name])}"
                            f" and {describe(run)})", str(path),
                            "give the values names that differ in a directory name")
        seen[run.name] = run


def describe(run):
    return ", ".join(f"{k}: {v!r}" for k, v in run.overrides.items()) or "the base"


def check_run(plan, run, path, processes=1):
    """Training's own checks on this run's flags (ranges, combinations), without running it;
    a problem names the run and, where one flag is to blame, the line that set it. -> the
    flags as training resolves them."""
    try:
        return parse_args(["--output_dir", str(plan.run_dir(run))], config_values=run.flags,
                   processes=processes)
    except UserError as error:
        line = next((at for flag, at in run.lines.items() if f"--{flag}" in error.what),
                    str(path))
        raise UserError(f"run {run.name}: {error.what}", line, error.fix) from None


# -- the sweep directory's record of its plan --------------------------------------------------

def write_plan(plan, sweep_text):
    """Into the sweep directory: plan.json (every run's flags), tasks.tsv, each run's flags as
    a config file (its --config), the sweep file as given. A directory made by another plan is
    refused, with the difference; one whose runs are all in this plan is extended. -> the
    names of runs new to the directory."""
    folder = plan.sweep_dir
    record = folder / PLAN_FILE
    runs = [run.describe() for run in plan.runs]
    added = [run.name for run in plan.runs]
    if record.is_file():
        before = read_recorded(record)
        check_same_plan(before["runs"], runs, record)
        added = [r["name"] for r in runs if r["name"] not in {b["name"] for b in before["runs"]}]
    elif folder.is_dir() and any(folder.iterdir()):
        raise UserError("the sweep directory holds something other than a sweep (no plan.json)",
                        str(folder), "give the sweep another output_dir")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIGS_DIR).mkdir(exist_ok=True)
    (folder / LOGS_DIR).mkdir(exist_ok=True)
    for run in plan.runs:
        text = yaml.safe_dump(run.flags, sort_keys=False)
        atomic_write(plan.config_file(run), lambda f, t=text: f.write(t), binary=False)
    tasks = "".join(f"{i}\t{run.name}\n" for i, run in enumerate(plan.runs))
    atomic_write(folder / TASKS_FILE, lambda f: f.write(tasks), binary=False)
    atomic_write(folder / "sweep.yaml", lambda f: f.write(sweep_text), binary=False)
    # workdir: what the runs' relative paths (manifests, the sweep file) are relative to
    write_json(record, {"sweep_file": plan.source, "baseline": plan.baseline,
                        "workdir": str(Path.cwd()),
                        "toolkit": toolkit_version(), "written": time.strftime("%Y-%m-%d %H:%M:%S"),
                        "sweep_sha256": hashlib.sha256(sweep_text.encode()).hexdigest(),
                        "runs": runs})
    return added


def load_plan(sweep_dir):
    """The plan a sweep directory records (plan.json) -> Plan, for status and aggregate."""
    sweep_dir = Path(sweep_dir)
    record = sweep_dir / PLAN_FILE
    if not record.is_file():
        raise UserError("not a sweep directory (no plan.json)", str(sweep_dir),
                        "give the directory a sweep ran in (its output_dir)")
    recorded = read_recorded(record)
    runs = [Run(r["name"], r["group"], r["overrides"], r["flags"], epochs=r.get("epochs"))
            for r in recorded["runs"]]
    return Plan(recorded["sweep_file"], sweep_dir, runs, recorded["baseline"])


def read_recorded(record):
    try:
        return json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise UserError(f"cannot read the sweep's plan ({error})", str(record),
                        "restore the file, or give the sweep another output_dir") from None


def check_same_plan(before, now, record):
    """Runs already planned must keep their flags, and none may go: anything else mixes two
    plans in one directory."""
    new = {r["name"]: r for r in now}
    for old in before:
        if old["name"] not in new:
            raise UserError(f"the sweep file no longer has run '{old['name']}' that "
                            f"{record.parent} holds", str(record),
                            "restore the sweep file, or give it another output_dir")
        changed = flag_changes(old["flags"], new[old["name"]]["flags"])
        if changed:
            raise UserError(f"the sweep file changed run '{old['name']}' since {record.parent} "
                            f"was planned: {'; '.join(changed[:3])}", str(record),
                            "restore the sweep file, or give the changed sweep another "
                            "output_dir (adding runs is fine)")


def flag_changes(old, new):
    keys = sorted(set(old) | set(new))
    missing = "(unset)"
    return [f"{k}: {old.get(k, missing)} -> {new.get(k, missing)}" for k in keys
            if old.get(k, missing) != new.get(k, missing)]


def toolkit_version():
    """The checkout's git commit (and whether files differ from it), for the record."""
    def git(*args):
        done = subprocess.run(["git", "-C", str(TOOLKIT), *args], capture_output=True,
                              text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "note": "not a git checkout"}
    return {"commit": commit, "modified_files": bool(git("status", "--porcelain",
                                                         "--untracked-files=no"))}
