"""Mixed precision: bf16 autocast where the GPU has it; fp16 + GradScaler (with T5's guard)
where it does not; fp32 on CPU."""
import contextlib
import warnings

import torch
import torch.nn.functional as F

from .errors import UserError

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # --precision's choices


def resolve_precision(name, device):
    if device.type != "cuda":
        if name == "fp16":
            raise UserError("--precision fp16 needs a CUDA GPU", "--precision",
                            "use fp32 or bf16 on CPU, or auto")
        return "fp32" if name == "auto" else name
    bf16_ok = torch.cuda.is_bf16_supported()
    if name == "bf16" and not bf16_ok:
        raise UserError(f"{torch.cuda.get_device_name(device)} has no bf16", "--precision",
                        "use fp16, fp32 or auto")
    if name == "auto":
        name = "bf16" if bf16_ok else "fp16"
    if name == "fp16":
        warnings.warn("fp16 overflows in T5's feed-forward (HF issues 4586, 9295, 14189): its "
                      "output layers run in fp32 and non-finite steps are skipped; use fp32 "
                      "if losses go NaN", stacklevel=2)
    return name


def autocast(device, precision):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[precision])


def make_scaler(device, precision):
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def _fp32_linear(linear, x):
    with torch.autocast(x.device.type, enabled=False):
        return F.linear(x.float(), linear.weight.float(),
                        None if linear.bias is None else linear.bias.float())


def guard_t5_fp16(t5):
    """Run each T5 feed-forward output projection (`wo`, where fp16 overflows) in fp32, as
    HF's _keep_in_fp32_modules = ['wo'] does for fp16 weights. State dict keys unchanged."""
    for module in t5.modules():
        if hasattr(module, "wo") and isinstance(module.wo, torch.nn.Linear):
            module.wo.forward = lambda x, linear=module.wo: _fp32_linear(linear, x)
