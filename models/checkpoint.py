"""The sonar-t5 model file: one checkpoint rebuilds model + tokenizer (file I/O in common)."""
from common.checkpoint_io import load_checkpoint, load_state_dict_strict, save_checkpoint
from common.errors import UserError

from .sonar_t5 import SonarT5, SonarT5Config
from .tokenizer import Tokenizer

FORMAT_VERSION = 1
REQUIRED_KEYS = ("model_config", "state_dict", "tokenizer")

__all__ = ["load_checkpoint", "load_model", "model_checkpoint", "save_checkpoint", "save_model"]


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
    missing = [key for key in REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise UserError(f"incomplete sonar-t5 checkpoint (no {', '.join(missing)})", str(path),
                        "use best_model.pt or last_model.pt as a training run wrote it")
    model = SonarT5(SonarT5Config.from_dict(ckpt["model_config"]))
    load_state_dict_strict(model, ckpt["state_dict"], path)
    return model.to(device).eval(), Tokenizer.from_tensor(ckpt["tokenizer"], path), ckpt
