"""AdamW with differential learning rates, the learning-rate schedule (linear warm-up, then
linear decay to 0 at the end of the run, which --time_budget fits to the epochs that fit), and
the fp16 gradient scaler: what takes an optimizer step."""
import math
from dataclasses import dataclass
from typing import Optional

import torch

from sonar_t5.common.flag_views import FlagView
from sonar_t5.common.precision import make_scaler
from sonar_t5.models import BRIDGES

from .sharding import load_optimizer_state

PARTS = ("encoder", "bridge", "t5", "contrastive")  # contrastive: --contrastive_weight's heads


def _no_decay(name, param, learned_tokens=()):
    """Biases, norms and a bridge's learned tokens (its no_decay names) are not
    weight-decayed."""
    return param.dim() < 2 or "norm" in name or name.endswith(learned_tokens)


def build_optimizer(model, lr, encoder_lr_scale=0.2, weight_decay=0.01, fused=False):
    """The parts (encoder lr x encoder_lr_scale, the others lr x 1), each split into
    decay / no-decay groups. Group names say which."""
    scales = {"encoder": encoder_lr_scale, "bridge": 1.0, "t5": 1.0, "contrastive": 1.0}
    groups = []
    for part in PARTS:
        module = getattr(model, part)
        if module is None:  # no contrastive heads
            continue
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        tokens = BRIDGES[model.config.bridge].no_decay if part == "bridge" else ()
        for decay in (True, False):
            params = [p for n, p in named if _no_decay(n, p, tokens) != decay]
            if params:
                groups.append({"name": f"{part}{'' if decay else '_no_decay'}", "params": params,
                               "lr": lr * scales[part], "weight_decay": weight_decay * decay})
    return torch.optim.AdamW(groups, lr=lr, fused=fused or None)


@dataclass
class Schedule:
    """The learning rate as a fraction of its peak: linear warm-up over `warmup` steps, the
    peak until `decay_start`, then linear decay to 0 at `total`. Without --time_budget,
    decay_start = warmup (warm-up, then decay over the whole run). With it, the run's length is
    unknown until the first epoch is timed: `total` is None (the peak holds) until
    fit_to_budget() sets the decay over the epochs that fit."""
    warmup: int
    total: int = None
    decay_start: int = 0

    def factor(self, step):
        if step < self.warmup:
            return step / self.warmup  # from 0, as transformers' linear schedule
        if self.total is None or step < self.decay_start:
            return 1.0
        return max(0.0, (self.total - step) / max(self.total - self.decay_start, 1))


def epochs_in_budget(budget_s, seconds_per_epoch, max_epochs):
    """How many epochs of this length fit the budget (at least 1, at most --epochs)."""
    return max(1, min(max_epochs, math.floor(budget_s / max(seconds_per_epoch, 1e-9))))


def learning_rates(optimizer):
    """{part: lr} for the decayed group of each part."""
    return {g["name"]: g["lr"] for g in optimizer.param_groups if "_no_decay" not in g["name"]}


@dataclass
class Optimization:
    """What takes an optimizer step, saved and restored together."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR  # steps through `schedule`
    scaler: torch.amp.GradScaler
    schedule: Schedule

    def state_dict(self, optimizer_state):
        """optimizer_state: the optimizer's, keyed by parameter name (sharding.py's
        full_training_state), so that it loads sharded or not."""
        return {"optimizer": optimizer_state,
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict()}

    def load_state_dict(self, ckpt, model):
        load_optimizer_state(model, self.optimizer, ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])

    def fit_to_budget(self, step, total):
        """--time_budget, once the first epoch is timed: decay from `step` to 0 at `total`."""
        self.schedule.decay_start = max(step, self.schedule.warmup)
        self.schedule.total = total


@dataclass(frozen=True)
class OptimizerSettings(FlagView):
    """The optimizer's and the schedule's flags."""
    learning_rate: float
    encoder_lr_scale: float
    weight_decay: float
    fused_adamw: bool
    warmup_steps: int  # resolved: parse_args or choose_warmup_steps set it
    epochs: int
    time_budget: Optional[float]  # minutes: the schedule is fitted after the first epoch


def plan_time_budget(settings, state, optimization, steps_per_epoch):
    """--time_budget, after the first epoch: the epochs that fit, and the learning rate's
    decay over them (kept in TrainState for --resume). settings: OptimizerSettings. -> a
    line for the console."""
    per_epoch = state.seconds / state.epoch
    state.planned_epochs = epochs_in_budget(settings.time_budget * 60, per_epoch,
                                            settings.epochs)
    total = state.planned_epochs * steps_per_epoch
    optimization.fit_to_budget(state.global_step, total)
    state.decay_from = [optimization.schedule.decay_start, total]
    return (f"time budget {settings.time_budget:g} min: {state.planned_epochs} epochs of "
            f"{per_epoch:.0f} s fit; the learning rate decays to 0 at step {total}")


def build_optimization(model, settings, steps_per_epoch, runtime, planned=None):
    """AdamW (differential LRs), the learning-rate schedule, and the fp16 gradient scaler (a
    no-op at other precisions). settings: OptimizerSettings. planned: a resumed
    --time_budget run's (decay_start, total), once its first epoch has set them."""
    optimizer = build_optimizer(model, settings.learning_rate, settings.encoder_lr_scale,
                                settings.weight_decay, fused=settings.fused_adamw)
    warmup = settings.warmup_steps
    if planned:
        schedule = Schedule(warmup, total=planned[1], decay_start=planned[0])
    elif settings.time_budget:
        schedule = Schedule(warmup)
    else:
        schedule = Schedule(warmup, max(steps_per_epoch * settings.epochs, 1),
                            decay_start=warmup)
    # A function, not the schedule's bound method: LambdaLR saves only a callable object's
    # attributes, and the schedule is rebuilt from the flags and TrainState on --resume.
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule.factor(step))
    return Optimization(optimizer, scheduler, make_scaler(runtime.device, runtime.precision),
                        schedule)
