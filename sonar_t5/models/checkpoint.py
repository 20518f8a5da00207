"""The sonar-t5 model files: one checkpoint (best_model.pt, last_model.pt) rebuilds model +
tokenizer; an exported folder (Hugging Face layout, safetensors weights) does too.

An exported folder:
    model.safetensors        the weights, tensors only (no pickle)
    config.json              {"model_type": "sonar_t5", "model_config", "train_args", ...}
    spiece.model             the SentencePiece tokenizer
    generation_config.json   transformers' GenerationConfig: the generate() defaults
    README.md                the model card (sonar_t5/evaluation/export.py writes it)
"""
import json
import os
import shutil
from pathlib import Path

import safetensors.torch
import torch
from transformers import GenerationConfig

from sonar_t5.common.checkpoint_io import load_checkpoint, load_state_dict_strict, save_checkpoint
from sonar_t5.common.cli import out_of_range, with_current_flag_names
from sonar_t5.common.errors import UserError
from sonar_t5.common.files import FILE_PERMISSIONS, write_json

from .sonar_t5 import SonarT5, SonarT5Config
from .tokenizer import Tokenizer

FORMAT_VERSION = 1
REQUIRED_KEYS = ("model_config", "state_dict", "tokenizer")

__all__ = ["load_checkpoint", "load_model", "model_checkpoint", "save_checkpoint", "save_model"]


def model_checkpoint(model, tokenizer, train_args, state_dict=None, **extra):
    """The dict saved as best_model.pt / last_model.pt (extra: epoch, metrics, state...).
    state_dict: the model's full weights where `model` holds shards (--sharding fsdp)."""
    return {"format_version": FORMAT_VERSION, "kind": "sonar_t5",
            "model_config": model.config_dict(),
            "state_dict": model.state_dict() if state_dict is None else state_dict,
            "tokenizer": tokenizer.to_tensor(), "train_args": dict(train_args), **extra}


def save_model(path, model, tokenizer, train_args, **extra):
    save_checkpoint(model_checkpoint(model, tokenizer, train_args, **extra), path)


def load_model(path, device="cpu"):
    """-> (SonarT5 in eval mode on device, Tokenizer, the checkpoint dict). `path`: a
    checkpoint file, or an exported folder (whose dict holds its config.json)."""
    if Path(path).is_dir():
        return load_exported(path, device)
    ckpt = load_checkpoint(path, kind="sonar_t5")
    missing = [key for key in REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise UserError(f"incomplete sonar-t5 checkpoint (no {', '.join(missing)})", str(path),
                        "use best_model.pt or last_model.pt as a training run wrote it")
    model = build_bounded(ckpt["model_config"], path)
    load_state_dict_strict(model, ckpt["state_dict"], path)
    if "train_args" in ckpt:
        ckpt["train_args"] = with_current_flag_names(ckpt["train_args"])
    return model.to(device).eval(), Tokenizer.from_tensor(ckpt["tokenizer"], path), ckpt


MAX_LAYERS = 1000  # per stack: T5-XXL has 24; a config beyond this is not a model


def build_bounded(model_config, where):
    """The SonarT5 a file's model config describes, its size checked before anything is
    allocated: the config may come from anyone (an exported folder), and one that declares a
    model larger than this machine's memory (d_model 10^6, a bridge 10^5 times wider) is
    refused in one line instead of exhausting it. The model is built once without storage
    (PyTorch's meta device) to count its parameters exactly."""
    config = SonarT5Config.from_dict(model_config)
    layers = [v for k, v in _numbers(model_config) if "layers" in k]
    if any(n > MAX_LAYERS for n in layers):
        raise UserError(f"the model config declares {max(layers):,} layers in one stack "
                        f"(at most {MAX_LAYERS:,} are plausible)", str(where),
                        "the file is damaged or not a sonar-t5 model; export or train it again")
    with torch.device("meta"):
        shape = SonarT5(config)
    needed = sum(t.numel() * t.element_size() for t in (*shape.parameters(), *shape.buffers()))
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > memory:
        raise UserError(f"the model config declares a model of {needed / 2**30:,.1f} GiB, more "
                        f"than this machine's memory ({memory / 2**30:,.1f} GiB)", str(where),
                        "the file is damaged or not a sonar-t5 model; export or train it again")
    return SonarT5(config)


def _numbers(config, prefix=""):
    """(dotted key, value) of every integer in a nested config."""
    for key, value in config.items():
        if isinstance(value, dict):
            yield from _numbers(value, f"{prefix}{key}.")
        elif isinstance(value, int) and not isinstance(value, bool):
            yield prefix + key, value


GENERATION_KEYS = ("num_beams", "max_new_tokens", "no_repeat_ngram_size", "repetition_penalty",
                   "length_penalty")


def save_exported(out_dir, model, tokenizer, info, generation, readme):
    """Write the exported folder (see the module's docstring) under a temporary name, then
    rename it to out_dir: a failed export leaves nothing. info: what config.json holds
    beside the model config (train_args, epoch, metrics...); generation: {GENERATION_KEYS}."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError("the export folder already exists and is not empty", str(out),
                        "choose a new folder; nothing was overwritten")
    tmp = out.parent / f".{out.name}.export-{os.getpid()}"
    try:
        tmp.mkdir(parents=True)
        # save_model, not save_file: it stores T5's tied embeddings once
        safetensors.torch.save_model(model, str(tmp / "model.safetensors"))
        os.chmod(tmp / "model.safetensors", FILE_PERMISSIONS)  # as readable as the rest
        write_json(tmp / "config.json", {"model_type": "sonar_t5",
                                         "format_version": FORMAT_VERSION,
                                         "model_config": model.config_dict(), **info})
        (tmp / "spiece.model").write_bytes(tokenizer.model_bytes)
        t5 = model.t5.config
        GenerationConfig(decoder_start_token_id=t5.decoder_start_token_id,
                         eos_token_id=t5.eos_token_id, pad_token_id=t5.pad_token_id,
                         early_stopping=generation["num_beams"] > 1,
                         **generation).save_pretrained(tmp)
        (tmp / "README.md").write_text(readme, encoding="utf-8")
        if out.is_dir():
            out.rmdir()  # empty: checked above
        os.rename(tmp, out)
    except OSError as error:
        raise UserError(f"could not write the export ({error.strerror or error})", str(out),
                        "free disk space or choose another folder") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_exported(path, device="cpu"):
    """An exported folder -> (model, tokenizer, its config.json with train_args whose
    generation settings are generation_config.json's)."""
    path = Path(path)
    missing = [n for n in ("model.safetensors", "config.json", "spiece.model")
               if not (path / n).is_file()]
    odd = [n for n in missing if (path / n).exists()]
    if odd:
        raise UserError(f"{odd[0]} is not a regular file (a device, a folder or a link to one)",
                        str(path / odd[0]), "export the checkpoint again")
    if missing:
        raise UserError(f"not an exported sonar-t5 folder (no {', '.join(missing)})", str(path),
                        "pass a folder written by python -m sonar_t5.evaluation.export, or a .pt "
                        "checkpoint")
    config = _folder_json(path / "config.json")
    if not isinstance(config.get("model_config"), dict):
        raise UserError("config.json has no model_config", str(path / "config.json"),
                        "export the checkpoint again")
    try:  # safetensors reads a bounded header first: a hostile length is refused at once
        model = build_bounded(config["model_config"], path / "config.json")
        safetensors.torch.load_model(model, str(path / "model.safetensors"), strict=True)
    except (ValueError, KeyError, TypeError, RuntimeError, OSError,
            safetensors.SafetensorError) as error:
        raise UserError(f"cannot load the exported model ({type(error).__name__}: "
                        f"{str(error).splitlines()[0][:120] if str(error) else ''})", str(path),
                        "export the checkpoint again") from None
    tokenizer = Tokenizer((path / "spiece.model").read_bytes(), path / "spiece.model")
    generation_file = path / "generation_config.json"
    if generation_file.is_file():
        generation = _folder_json(generation_file)
        for key in GENERATION_KEYS:
            problem = key in generation and out_of_range(key, generation[key])
            if problem:
                raise UserError(f"generation_config.json: {problem}", str(generation_file),
                                "export the checkpoint again, or correct the value")
        config["train_args"] = {**config.get("train_args", {}),
                                **{k: generation[k] for k in GENERATION_KEYS if k in generation}}
    config["train_args"] = with_current_flag_names(config.get("train_args", {}))
    return model.to(device).eval(), tokenizer, config


MAX_FOLDER_JSON = 10_000_000  # bytes: an exported folder's JSON files are a few kB


def _folder_json(path):
    """One JSON object file of an exported folder (which may come from anyone): read with a
    size bound, and refused in one line unless it is a JSON object."""
    try:
        if path.stat().st_size > MAX_FOLDER_JSON:
            raise ValueError(f"{path.stat().st_size:,} bytes")
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:  # JSON and UTF-8 errors too
        raise UserError(f"{path.name} is not readable JSON ({type(error).__name__}: "
                        f"{str(error)[:80]})", str(path), "export the checkpoint again") from None
    if not isinstance(value, dict):
        raise UserError(f"{path.name} holds a JSON {type(value).__name__}, not an object",
                        str(path), "export the checkpoint again")
    return value
