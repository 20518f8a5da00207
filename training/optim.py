"""AdamW with differential learning rates and a linear warmup-then-decay schedule."""
import torch
from transformers import get_scheduler

PARTS = ("encoder", "bridge", "t5")


def _no_decay(name, param):
    """Biases, norms and learned latent/expander tokens are not weight-decayed."""
    return param.dim() < 2 or "norm" in name or name.endswith(("latents", "expanders"))


def build_optimizer(model, lr, encoder_lr_scale=0.2, weight_decay=0.01, fused=False):
    """Three parts (encoder lr x encoder_lr_scale, bridge and T5 lr x 1), each split into
    decay / no-decay groups. Group names say which."""
    scales = {"encoder": encoder_lr_scale, "bridge": 1.0, "t5": 1.0}
    groups = []
    for part in PARTS:
        named = [(n, p) for n, p in getattr(model, part).named_parameters() if p.requires_grad]
        for decay in (True, False):
            params = [p for n, p in named if _no_decay(n, p) != decay]
            if params:
                groups.append({"name": f"{part}{'' if decay else '_no_decay'}", "params": params,
                               "lr": lr * scales[part], "weight_decay": weight_decay * decay})
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)


def build_scheduler(optimizer, warmup_steps, total_steps):
    return get_scheduler("linear", optimizer, num_warmup_steps=warmup_steps,
                         num_training_steps=max(total_steps, 1))


def learning_rates(optimizer):
    """{part: lr} for the decayed group of each part."""
    return {g["name"]: g["lr"] for g in optimizer.param_groups if "_no_decay" not in g["name"]}
