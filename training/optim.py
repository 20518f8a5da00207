"""AdamW with differential learning rates, a linear warmup-then-decay schedule, and the fp16
gradient scaler: what takes an optimizer step."""
from dataclasses import dataclass

import torch
from transformers import get_scheduler

from common.precision import make_scaler

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


@dataclass
class Optimization:
    """What takes an optimizer step, saved and restored together."""
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler

    def state_dict(self):
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, ckpt):
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])


def build_optimization(model, args, steps_per_epoch, runtime):
    """AdamW (differential LRs), the warmup-then-decay schedule over the whole run, and the
    fp16 gradient scaler (a no-op at other precisions)."""
    optimizer = build_optimizer(model, args.learning_rate, args.encoder_lr_scale,
                                args.weight_decay, fused=args.fused_adamw)
    return Optimization(optimizer, build_scheduler(optimizer, args.warmup_steps,
                                                   steps_per_epoch * args.epochs),
                        make_scaler(runtime.device, runtime.precision))
