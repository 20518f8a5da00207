"""The JSON files this toolkit reads back, and what each must hold to be read. Every reader
goes through read_checked(): a file that is not what its name says (a JSON list for an
object, a missing or mistyped field) is refused in one line naming the file and the field,
never a KeyError or TypeError from the code that reads it.

A schema is {field: kind}; a field "a.b" is b inside the object a. Kinds are Python types
(int, float, str, bool, dict, list), tuples of them, or Optional(kind) for a field that may be
missing or null. Fields a schema does not name are not checked (files gain fields over time).
"""
from dataclasses import dataclass

from .cli import with_current_flag_names
from .errors import UserError
from .files import read_json

NUMBER = (int, float)


@dataclass(frozen=True)
class Optional:
    kind: object


# training_history.json: a list of these, one per epoch
HISTORY_RECORD = {"epoch": int, "train_loss": Optional(NUMBER), "val_loss": NUMBER,
                  "val_bleu": NUMBER, "cond_gap": Optional(NUMBER)}
# validation_summary.json (validate_perceiver_model.py --output, RUN/results/SPLIT/)
SUMMARY = {"bleu": NUMBER, "num_samples": int, "generation": dict,
           "generation.num_beams": int, "diversity": dict, "diversity.unique_ratio": NUMBER,
           "checkpoint": Optional(str), "manifest": Optional(str), "epoch": Optional(int),
           "cond_gap": Optional(NUMBER), "confidence_95": Optional(dict)}
# a training run's config.json
RUN_CONFIG = {"args": dict, "args.seed": Optional(int), "args.freeze_encoder": Optional(bool),
              "model_config": dict, "model_config.bridge": str,
              "model_config.resampler_input": str, "model_config.num_latents": int,
              "model_config.num_layers": int, "parameters": dict, "parameters.total": int,
              "generation": Optional(dict), "data": Optional(dict)}


def read_run_config(path):
    """A training run's config.json (its flags by their current names)."""
    config = read_checked(path, RUN_CONFIG, "the run's config.json",
                          "pass the --output_dir of a sonar-t5 training run")
    if isinstance(config.get("args"), dict):
        config["args"] = with_current_flag_names(config["args"])
    return config


def read_summary(path):
    """A validation_summary.json."""
    return read_checked(path, SUMMARY, "validation_summary.json",
                        "score the checkpoint again with validate_perceiver_model.py")


def read_checked(path, schema, what, fix="rerun what wrote it"):
    """The JSON object in path, checked against schema (a list of such objects where the
    schema is given as [schema]). what: the file as a user knows it, for the message."""
    value = read_json(path)
    problem = _problem(value, schema)
    if problem:
        raise UserError(f"{what} {problem}", str(path), fix)
    return value


def _problem(value, schema):
    if isinstance(schema, list):
        if not isinstance(value, list):
            return f"holds a JSON {_json_name(value)}, not a list"
        for n, item in enumerate(value, 1):
            problem = _problem(item, schema[0])
            if problem:
                return f"entry {n}: {problem}" if problem.startswith("field") else \
                    f"entry {n} {problem}"
        return None
    if not isinstance(value, dict):
        return f"holds a JSON {_json_name(value)}, not an object"
    for field, kind in schema.items():
        found, present = value, True
        for part in field.split("."):
            if not isinstance(found, dict) or part not in found:
                present = False
                break
            found = found[part]
        optional = isinstance(kind, Optional)
        kind = kind.kind if optional else kind
        if not present or found is None:
            if not optional:
                return f"has no field '{field}'"
            continue
        if not _is(found, kind):
            return f"field '{field}' is a JSON {_json_name(found)}, not {_kind_name(kind)}"
    return None


def _is(value, kind):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:  # JSON true is not a number here
        return False
    return isinstance(value, kinds)


JSON_NAMES = {dict: "object", list: "list", str: "string", bool: "true/false", int: "integer",
              float: "number", type(None): "null"}


def _json_name(value):
    return JSON_NAMES.get(type(value), type(value).__name__)


def _kind_name(kind):
    if kind == NUMBER:
        return "a number"
    names = [JSON_NAMES[k] for k in (kind if isinstance(kind, tuple) else (kind,))]
    return ("an " if names[0][0] in "aeiou" else "a ") + " or ".join(names)
