"""One epoch of training, one of evaluation, and what an epoch records and prints.

train_sonar_with_t5.py's main() calls these in its loop; nothing here reads or writes files
(the per-step log goes to the callback main() passes, sonar_t5/training/tracking.py's Tracker).
"""
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch

from sonar_t5.common.errors import UserError
from sonar_t5.common.files import stops_deferred
from sonar_t5.common.precision import autocast
from sonar_t5.common.progress import progress
from sonar_t5.data.dataset import model_inputs, naming_the_batch_if_out_of_memory
from sonar_t5.evaluation.generation import run_evaluation
from sonar_t5.evaluation.metrics import display, diversity, epoch_metrics, translation_metrics

from .distributed import all_reduce_sum, gather_dicts
from .optim import learning_rates
from .sharding import accumulating, full_value, whole_weights
from .state import batch_seed

MAX_NONFINITE_IN_A_ROW = 20
COND_GAP_WARNING = 0.05  # nats/token: below this the decoder barely uses its input


class TrainingDiverged(UserError):
    exit_code = 1


@dataclass(frozen=True)
class StepSettings:
    """What a training step takes from the flags."""
    epochs: int  # the run's, for the progress bar
    grad_accum_steps: int
    max_grad_norm: float
    label_smoothing: float
    word_dropout: float
    contrastive_weight: float
    seed: int  # each batch's dropout seed derives from it (state.batch_seed)
    log_every: int  # optimizer steps between train_log.jsonl lines
    checkpoint: str  # last_model.pt, named when training diverges

    @classmethod
    def from_args(cls, args):
        return cls(epochs=args.epochs, grad_accum_steps=args.grad_accum_steps,
                   max_grad_norm=args.max_grad_norm, label_smoothing=args.label_smoothing,
                   word_dropout=args.word_dropout, contrastive_weight=args.contrastive_weight,
                   seed=args.seed, log_every=args.log_every,
                   checkpoint=f"{args.output_dir}/last_model.pt")


def train_one_epoch(epoch, model, loader, optimization, state, steps, runtime, meter,
                    log_step=None):
    """-> (mean training loss over finite batches, or None; samples/s). `model` is what the
    step calls (DDP or compiled, see setup.wrap_for_training); steps: StepSettings; meter:
    the run's FlopsMeter (sonar_t5/training/mfu.py), which counts the FLOPs of the first step. Starts
    after the batches state.batches_done says are done (resuming mid-epoch). log_step(record)
    is called every steps.log_every optimizer steps with the steps since the last call (see
    step_record)."""
    model.train()
    sampler = loader.batch_sampler
    sampler.set_epoch(epoch, state.batches_done)
    steps_then, skipped_then = state.global_step, state.nonfinite_total
    # [loss sum, finite batches] stay on the device: no host sync per batch.
    sums = torch.tensor(state.partial_loss, device=runtime.device, dtype=torch.float64)
    at_last_step = sums.clone()
    samples, n, start = 0, len(loader), time.time()
    last_log = (state.logged_loss, samples, start)  # where the previous log_step left off
    bar = progress(loader, desc=f"epoch {epoch}/{steps.epochs}", leave=False,
                   disable=not runtime.dist.is_main)
    try:
        for i, batch in enumerate(bar):
            step_ends = (i + 1) % steps.grad_accum_steps == 0 or i + 1 == n
            torch.manual_seed(batch_seed(steps.seed, epoch, sampler.start_batch + i,
                                         runtime.dist.rank))
            with meter.counting(len(batch["ids"])):
                loss = forward_backward(model, batch, optimization.scaler, steps, runtime,
                                        sync=step_ends)
            finite = torch.isfinite(loss)
            sums += torch.stack([torch.where(finite, loss, 0).double(), finite.double()])
            samples += len(batch["ids"])
            if step_ends:  # a step, its bookkeeping and log line happen whole: Ctrl-C waits
                with stops_deferred():
                    grad_norm = optimizer_step(optimization, state, steps, epoch)
                    state.batches_done = sampler.start_batch + i + 1
                    at_last_step = sums.clone()
                    if log_step and state.global_step % steps.log_every == 0:
                        now = sums.tolist()
                        log_step(step_record(epoch, state, optimization, grad_norm, last_log,
                                             now, samples, runtime, meter))
                        last_log = (now, samples, time.time())
                        state.logged_loss = now
                runtime.stop_if_any_asked()  # under torchrun: every process at this step
            if i % 20 == 0 and runtime.dist.is_main:
                bar.set_postfix(loss=f"{float(loss):.3f}", refresh=False)  # drawn with the bar
    except KeyboardInterrupt:  # Ctrl-C saves the steps taken; --resume continues after them
        state.partial_loss = at_last_step.tolist()
        raise
    state.partial_loss = sums.tolist()  # kept until the epoch is recorded (end_epoch)
    taken, skipped = state.global_step - steps_then, state.nonfinite_total - skipped_then
    if taken and skipped == taken:  # nothing learned: a run must not end "successfully"
        raise TrainingDiverged(
            f"no optimizer step taken in epoch {epoch}: all {taken} steps had a non-finite "
            "loss or gradient and were skipped", steps.checkpoint,
            "the last good checkpoint is kept; check the features for NaN/Inf, lower "
            "--learning_rate, or use --precision fp32")
    loss_sum, finite_batches = all_reduce_sum(sums.tolist(), runtime.dist, runtime.device)
    rate = samples * runtime.dist.world_size / (time.time() - start)
    return (loss_sum / finite_batches if finite_batches else None), rate


def step_record(epoch, state, optimization, grad_norm, last_log, sums, samples, runtime,
                meter):
    """One train_log.jsonl line: the mean loss (this process's finite batches), samples/s
    (all processes) and MFU since the previous line, the learning rates and the gradient
    norm before clipping (None when non-finite) of this step."""
    (loss_sum, finite), ((loss_then, finite_then), samples_then, time_then) = sums, last_log
    loss_sum, finite = loss_sum - loss_then, finite - finite_then
    rate = ((samples - samples_then) * runtime.dist.world_size
            / max(time.time() - time_then, 1e-9))
    return {"step": state.global_step, "epoch": epoch,
            "loss": loss_sum / finite if finite else None,
            "learning_rates": learning_rates(optimization.optimizer),
            "grad_norm": grad_norm if math.isfinite(grad_norm) else None,
            "samples_per_s": rate, "mfu": meter.mfu(rate),
            "nonfinite_steps": state.nonfinite_total}


def forward_backward(model, batch, scaler, steps, runtime, sync):
    labels = batch["labels"].to(runtime.device, non_blocking=True)
    # Gradient accumulation: gradients are reduced only on the micro-batch that ends a step.
    context = accumulating(model) if runtime.dist.enabled and not sync else nullcontext()
    with context, naming_the_batch_if_out_of_memory(batch):
        with autocast(runtime.device, runtime.precision):
            loss = model(labels=labels, label_smoothing=steps.label_smoothing,
                         word_dropout=steps.word_dropout,
                         contrastive_weight=steps.contrastive_weight,
                         **model_inputs(batch, runtime.device))
        scaler.scale(loss / steps.grad_accum_steps).backward()
    return loss.detach()


def optimizer_step(optimization, state, steps, epoch):
    """Unscale, clip and step; a non-finite gradient norm skips the step. One host sync a
    step. Under torchrun the norm is of the reduced gradients (FSDP: of all the shards), so
    every process decides alike.
    -> the gradient norm before clipping."""
    optimizer, scaler = optimization.optimizer, optimization.scaler
    scaler.unscale_(optimizer)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    norm = full_value(torch.nn.utils.clip_grad_norm_(params, steps.max_grad_norm))
    finite = bool(torch.isfinite(norm))
    if finite:
        scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    optimization.scheduler.step()
    state.global_step += 1
    state.nonfinite_total += not finite
    state.nonfinite_in_a_row = 0 if finite else state.nonfinite_in_a_row + 1
    if state.nonfinite_in_a_row >= MAX_NONFINITE_IN_A_ROW:
        raise TrainingDiverged(
            f"training diverged: {state.nonfinite_in_a_row} non-finite steps in a row "
            f"(epoch {epoch}, step {state.global_step})", steps.checkpoint,
            "the last good checkpoint is kept; lower --learning_rate, or use "
            "--precision fp32/bf16")
    return float(norm)


def evaluate(model, loader, tokenizer, settings, runtime):
    """Validation losses, conditioning gap, the translation metrics and diversity over every
    process. A sharded model is gathered whole for it (sharding.whole_weights)."""
    with whole_weights(model):
        result = run_evaluation(model, loader, tokenizer, runtime.device, settings,
                                precision=runtime.precision, show_progress=runtime.dist.is_main,
                                after_batch=runtime.stop_checks(len(loader)))
    hyps = gather_dicts(result["hypotheses"], runtime.dist)
    order = sorted(hyps)
    hypotheses = [hyps[i] for i in order]
    references = [loader.dataset.rows[i].text for i in order]
    return {"val_loss": result["val_loss"], "cond_gap": result["cond_gap"],
            "metrics": translation_metrics(hypotheses, references),
            "diversity": diversity(hypotheses),
            "samples": [{"reference": references[i], "translation": hypotheses[i]}
                        for i in range(min(3, len(order)))]}


def epoch_record(epoch, train_loss, samples_per_s, metrics, state, optimization, epoch_time,
                 mfu=None):
    """One training_history.json record: every translation metric as val_{name} (its
    signature as {name}_signature); mfu: the epoch's training MFU (0..1)."""
    div = metrics["diversity"]
    return {"epoch": epoch, "step": state.global_step, "train_loss": train_loss,
            "val_loss": metrics["val_loss"],
            **{(k if k.endswith("_signature") else f"val_{k}"): v
               for k, v in metrics["metrics"].items()},
            "most_common": div["most_common"], "most_common_pct": div["most_common_pct"],
            "cond_gap": metrics["cond_gap"], "lr": optimization.scheduler.get_last_lr()[-1],
            "learning_rates": learning_rates(optimization.optimizer),
            "epoch_time_s": epoch_time, "samples_per_s": samples_per_s, "mfu": mfu,
            "nonfinite_steps": state.nonfinite_total, "samples": metrics["samples"]}


EARLY_EPOCHS = 3  # repeated outputs are normal this early: the decoder learns the language first


def report_epoch(record, collapsed, history, epochs, resampler_input, say):
    """The epoch's line (of --epochs), its sample translations, and the mode-collapse
    warnings (whose levers depend on --resampler_input)."""
    r = record
    shown = "  ".join(f"{display(k).label} {display(k).line_format.format(v)}"
                      for k, v in epoch_metrics(r).items() if display(k).headline)
    say(f"epoch {r['epoch']}/{epochs}  train_loss {_num(r['train_loss'])}  "
        f"val_loss {r['val_loss']:.4f}  {shown}  cond_gap {r['cond_gap']:.3f}  "
        f"lr {r['lr']:.2e}  {r['epoch_time_s']:.1f}s ({r['samples_per_s']:.0f} samples/s"
        + (f", MFU {r['mfu']:.1%})" if r.get("mfu") is not None else ")"))
    for s in r["samples"]:
        say(f"    REF: {s['reference']}\n    HYP: {s['translation']}")
    before = history[-2] if len(history) > 1 else {"step": 0, "nonfinite_steps": 0}
    skipped = r["nonfinite_steps"] - before.get("nonfinite_steps", 0)
    if skipped:
        say(f"  warning: {skipped} of {r['step'] - before['step']} optimizer steps of this "
            "epoch were skipped (non-finite loss or gradient)")
    if collapsed:
        early = r["epoch"] <= EARLY_EPOCHS
        say(f"  {'note' if early else 'warning'}: mode collapse: "
            f"{epoch_metrics(r)['unique_ratio']:.0%} of validation outputs are distinct, "
            f"'{r['most_common']}' is {r['most_common_pct']:.0f}% of them"
            + (f" (expected in the first epochs, while the decoder learns the language; "
               f"worry if it lasts past epoch {EARLY_EPOCHS} or the conditioning gap stays "
               "near 0)" if early else ""))
    first = history[0]["train_loss"]
    falling = None not in (first, r["train_loss"]) and r["train_loss"] < first
    if falling and r["cond_gap"] < COND_GAP_WARNING:
        levers = "--word_dropout 0.1 or --contrastive_weight 0.5"
        if resampler_input == "pooled":
            levers = "--resampler_input tokens, " + levers
        say(f"  warning: conditioning gap {r['cond_gap']:.3f} while the training loss falls: "
            f"the decoder is ignoring its input (mode collapse ahead); try {levers}")


def _num(value):
    """A loss for the console; None when every batch of the epoch was non-finite."""
    return "n/a" if value is None else f"{value:.4f}"
