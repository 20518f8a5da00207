"""Devices: --device cpu | cuda | auto."""
import torch

from .errors import UserError


def resolve_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but no CUDA GPU is available", "--device",
                        "use --device cpu or --device auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"unknown device '{name}'", "--device", "use cpu, cuda or auto")
    return torch.device(name)
