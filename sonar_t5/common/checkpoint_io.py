"""Checkpoint files: written atomically, read weights-only, checked for their kind.

torch.load(weights_only=True) only unpickles tensors and plain containers, so loading a
checkpoint never executes code. Every checkpoint (model or encoder) is read through
load_checkpoint(); feature files are read in sonar_t5/data/features.py, also weights-only.
"""
import re

import torch

from .errors import UserError
from .files import atomic_write

# What each kind of checkpoint is, and which file the user should pass instead.
KINDS = {"sonar_t5": ("sonar-t5 model", "pass best_model.pt or last_model.pt from a training run")}


def save_checkpoint(obj, path):
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path, kind=None, map_location="cpu",
                    refused_fix="only load checkpoints written by this toolkit"):
    """The checkpoint dict; with `kind`, checked to be that kind of checkpoint. A file that
    holds Python objects beyond tensors is refused (never unpickled), `refused_fix` saying what
    to do instead."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError("checkpoint not found", str(path), "check the path") from None
    except IsADirectoryError:
        raise UserError("checkpoint path is a directory", str(path),
                        "pass the .pt file, e.g. best_model.pt inside it") from None
    except Exception as error:  # whatever torch/zipfile/pickle raise
        # torch's wordings: "Unsupported global: GLOBAL x.y" (a class) and, from 2.13,
        # "unsupported GLOBAL x.y whose module x is blocked" (a function such as os.system)
        found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL ([\w.]+)", str(error))
        if found:  # a well-formed pickle of objects beyond tensors: refused, never run
            raise UserError(f"refused to load checkpoint: it holds Python objects such as "
                            f"{found.group(1)}, not only tensors (weights-only loading never "
                            "runs code)", str(path), refused_fix) from None
        raise _unreadable(path, error) from None
    if not isinstance(ckpt, dict):
        raise UserError("not a sonar-t5 checkpoint (no dictionary inside)", str(path))
    if kind and ckpt.get("kind") != kind:
        name, fix = KINDS[kind]
        raise UserError(f"not a {name} checkpoint", str(path), fix)
    return ckpt


def _unreadable(path, error):
    """Random bytes, a truncated or damaged file. torch's own text is not repeated: it
    suggests turning unsafe loading on."""
    reason = re.search(r"WeightsUnpickler error: (.+)", str(error))
    detail = (reason.group(1).strip() if reason else
              f"{type(error).__name__}: {str(error).splitlines()[0][:60]}" if str(error)
              else type(error).__name__)
    return UserError(f"not a readable checkpoint (truncated or corrupt: {detail[:80]})",
                     str(path), "use another copy, e.g. last_model.pt or best_model.pt")


def load_state_dict_strict(module, state_dict, path):
    """load_state_dict that reports missing/unexpected/misshapen keys as one UserError line."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    misshapen = sorted(k for k in set(own) & set(state_dict)
                       if tuple(own[k].shape) != tuple(state_dict[k].shape))
    if missing or unexpected or misshapen:
        parts = [f"{name} keys: {', '.join(keys[:5])}{' ...' if len(keys) > 5 else ''}"
                 for name, keys in (("missing", missing), ("unexpected", unexpected),
                                    ("wrong-shape", misshapen)) if keys]
        raise UserError(f"checkpoint does not match the model ({'; '.join(parts)})", str(path),
                        "use a checkpoint written for this configuration")
    module.load_state_dict(state_dict)
