"""Checkpoints: one file rebuilds model + tokenizer; written atomically, read weights-only.

torch.load(weights_only=True) only unpickles tensors and plain containers, so a checkpoint
never executes code. Every torch.load in this project goes through load_checkpoint().
"""
import pickle

import torch

from common.errors import UserError
from common.files import atomic_write

from .sonar_encoder import load_state_dict_strict
from .sonar_t5 import SonarT5, SonarT5Config
from .tokenizer import Tokenizer

FORMAT_VERSION = 1


def save_checkpoint(obj, path):
    atomic_write(path, lambda f: torch.save(obj, f))


# What each kind of checkpoint is, and which file the user should pass instead.
KINDS = {"sonar_t5": ("sonar-t5 model", "pass best_model.pt or last_model.pt from a training run"),
         "sonar_encoder": ("SONAR encoder", "pass a file written by "
                                            "models.sonar_encoder.save_sonar_checkpoint")}


def load_checkpoint(path, kind=None, map_location="cpu"):
    """The checkpoint dict; with `kind`, checked to be that kind of checkpoint."""
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError("checkpoint not found", str(path), "check the path") from None
    except IsADirectoryError:
        raise UserError("checkpoint path is a directory", str(path),
                        "pass the .pt file, e.g. best_model.pt inside it") from None
    except pickle.UnpicklingError as error:
        if "weights_only" in str(error) or "Weights only load failed" in str(error):
            raise UserError("refused to load checkpoint: it holds Python objects or code, "
                            "not only tensors", str(path),
                            "only load checkpoints written by this toolkit") from None
        raise _unreadable(path, error) from None
    except Exception as error:  # whatever torch/zipfile/pickle raise: the file is damaged
        raise _unreadable(path, error) from None
    if not isinstance(ckpt, dict):
        raise UserError("not a sonar-t5 checkpoint (no dictionary inside)", str(path))
    if kind and ckpt.get("kind") != kind:
        name, fix = KINDS[kind]
        raise UserError(f"not a {name} checkpoint", str(path), fix)
    return ckpt


def _unreadable(path, error):
    detail = str(error).splitlines()[0][:80] if str(error) else type(error).__name__
    return UserError(f"not a readable checkpoint (truncated or corrupt: {detail})", str(path),
                     "use another copy, e.g. last_model.pt or best_model.pt")


def model_checkpoint(model, tokenizer, train_args, **extra):
    """The dict saved as best_model.pt / last_model.pt (extra: epoch, metrics, state...)."""
    return {"format_version": FORMAT_VERSION, "kind": "sonar_t5",
            "model_config": model.config_dict(), "state_dict": model.state_dict(),
            "tokenizer": tokenizer.to_tensor(), "train_args": dict(train_args), **extra}


def save_model(path, model, tokenizer, train_args, **extra):
    save_checkpoint(model_checkpoint(model, tokenizer, train_args, **extra), path)


def load_model(path, device="cpu"):
    """-> (SonarT5 in eval mode on device, Tokenizer, the checkpoint dict)."""
    ckpt = load_checkpoint(path, kind="sonar_t5")
    model = SonarT5(SonarT5Config.from_dict(ckpt["model_config"]))
    load_state_dict_strict(model, ckpt["state_dict"], path)
    return model.to(device).eval(), Tokenizer.from_tensor(ckpt["tokenizer"]), ckpt
