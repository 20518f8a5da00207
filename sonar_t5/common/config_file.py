"""--config FILE.yaml: flags from a file, checked like the command line's.

Keys are flag names without the dashes (`learning_rate: 1e-4`, `freeze_encoder: true`,
`report_to: [tensorboard]`). Each value is checked against its flag: an unknown key, or a
value of the wrong type or outside the flag's choices, is a one-line error naming the key,
the file and the line.
"""
import argparse
import reprlib

import yaml

from .cli import RENAMED_FLAGS
from .errors import UserError


MAX_CONFIG_BYTES = 1_000_000  # a config file is a few dozen lines


def read_config_file(path, parser):
    """-> {flag dest: value} from the YAML mapping in `path`, converted as argparse would."""
    text = read_text(path)
    try:
        refuse_aliases(text, path)
        root = yaml.compose(text)  # nodes keep their line numbers for the errors
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"not valid YAML ({getattr(error, 'problem', None) or error})", where,
                        "fix the file") from None
    except RecursionError:
        raise UserError("YAML nested too deeply", str(path), "write one flag per line, e.g. "
                                                             "learning_rate: 1e-4") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise UserError(f"holds a {type(values).__name__}, not a mapping of flag: value",
                        str(path), "write one flag per line, e.g. learning_rate: 1e-4")
    lines = {node.value: node.start_mark.line + 1 for node, _ in root.value}
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    out = {}
    for key, value in values.items():
        where = f"{path}:{lines.get(key, '?')}"
        name = str(key).lstrip("-").replace("-", "_")
        action = actions.get(RENAMED_FLAGS.get(name, name))
        if action is None or action.dest in ("help", "config"):
            raise UserError(f"unknown key '{key}'", where,
                            "keys are flag names without dashes (see --help), e.g. "
                            "learning_rate")
        out[action.dest] = convert(key, value, action, where)
    return out


def read_text(path):
    """The file's text: UTF-8, and a size a config file can have (bounded work)."""
    try:
        with open(path, "rb") as f:  # bounded by what is read: /dev/zero has no size to check
            data = f.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise UserError(f"the config file has more than a config file's "
                            f"{MAX_CONFIG_BYTES:,} bytes", str(path), "check --config")
        return data.decode("utf-8")
    except OSError as error:
        raise UserError(f"cannot read the config file ({error.strerror or error})", str(path),
                        "check --config") from None
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise UserError(f"the config file is not UTF-8 text (byte {error.object[error.start]:#x})",
                        f"{path}:{line}", "save it as UTF-8") from None


def refuse_aliases(text, path):
    """YAML aliases (*name) can make a small file expand to gigabytes (an "alias bomb") in
    whatever walks the values; flags never need them, so they are refused before anything is
    built. Scanning the events is linear in the file's size."""
    for event in yaml.parse(text):
        if isinstance(event, yaml.AliasEvent):
            raise UserError(f"YAML alias *{event.anchor} (config files take plain values)",
                            f"{path}:{event.start_mark.line + 1}",
                            "write the value itself instead of an anchor and alias")


def convert(key, value, action, where):
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise UserError(f"'{key}' must be true or false (got {reprlib.repr(value)})", where)
        return value
    if action.nargs in ("+", "*"):
        items = value if isinstance(value, list) else [value]
        if action.nargs == "+" and not items:
            raise UserError(f"'{key}' needs at least one value", where)
        return [convert_one(key, v, action, where) for v in items]
    if isinstance(value, list):
        raise UserError(f"'{key}' takes one value (got a list)", where)
    return None if value is None else convert_one(key, value, action, where)


def convert_one(key, value, action, where):
    """One value as the flag's type. Strings convert as on the command line: YAML reads 1e-4
    as a string (it wants 1.0e-4), and that is still a number here."""
    kind = action.type or str
    try:
        if isinstance(value, (bool, dict, list)):
            raise ValueError(value)
        if kind is int and isinstance(value, float):
            if not value.is_integer():
                raise ValueError(value)
            value = int(value)
        converted = kind(value)
    except (TypeError, ValueError):
        raise UserError(f"'{key}' must be {_name(kind)} (got {reprlib.repr(value)})", where) from None
    if action.choices is not None and converted not in action.choices:
        raise UserError(f"'{key}' must be one of {', '.join(map(str, action.choices))} "
                        f"(got {reprlib.repr(value)})", where)
    return converted


def _name(kind):
    return {int: "an integer", float: "a number", str: "text"}.get(kind, kind.__name__)
