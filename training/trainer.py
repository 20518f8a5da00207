"""The training loop: train_one_epoch(), validate(), checkpoints, history, early stopping."""
import random
import shlex
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from common.errors import UserError
from common.files import write_json
from data.dataset import make_loader
from evaluation.generation import run_evaluation, to_device
from evaluation.metrics import corpus_scores, diversity
from models.checkpoint import model_checkpoint, save_checkpoint

from .distributed import all_reduce_sum, gather_dicts
from .encoder_cache import cache_encoder_states
from .optim import build_optimizer, build_scheduler, learning_rates
from .precision import autocast, guard_t5_fp16, make_scaler
from .setup import drop_old_run

MAX_NONFINITE_IN_A_ROW = 20
COND_GAP_WARNING = 0.05  # nats/token: below this the decoder barely uses its input


class TrainingDiverged(UserError):
    exit_code = 1


class Trainer:
    def __init__(self, args, model, tokenizer, loaders, device, dist_info, precision, settings):
        self.args, self.model, self.tokenizer = args, model.to(device), tokenizer
        self.train_loader, self.val_loader, self.collate = loaders
        self.device, self.dist, self.precision, self.settings = device, dist_info, precision, settings
        self.out = Path(args.output_dir)
        self.show = dist_info.is_main
        if precision == "fp16":
            guard_t5_fp16(self.model.t5)
        if args.freeze_encoder:
            self.model.freeze_encoder()
            if not args.no_encoder_cache:
                self._use_encoder_cache()
        self.ddp = self.model
        if dist_info.enabled:
            self.ddp = DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=args.resampler_input == "tokens" and not args.freeze_encoder)
        if args.compile:
            # Only the training forward: generate() and checkpoints use the plain model, so
            # state-dict keys are unchanged. Batch and label lengths vary: after the first
            # recompile dynamo marks them dynamic instead of compiling every new shape.
            self.ddp = torch.compile(self.ddp)
        self.optimizer = build_optimizer(self.model, args.learning_rate, args.encoder_lr_scale,
                                         args.weight_decay, fused=args.fused_adamw)
        self.steps_per_epoch = -(-len(self.train_loader) // args.grad_accum_steps)
        self.scheduler = build_scheduler(self.optimizer, args.warmup_steps,
                                         self.steps_per_epoch * args.epochs)
        self.scaler = make_scaler(device, precision)
        self.state = {"epoch": 0, "batches_done": 0, "global_step": 0, "best_bleu": None,
                      "best_epoch": None, "bad_epochs": 0, "nonfinite_total": 0,
                      "nonfinite_in_a_row": 0, "partial_loss": [0.0, 0.0]}
        self.history = []

    # -- frozen encoder ---------------------------------------------------------------------
    def _use_encoder_cache(self):
        """Swap both loaders' data for the encoder's outputs, computed once."""
        def cached(loader):
            # Every sample, in every process: under torchrun each epoch deals the training
            # batches out afresh, so a process needs more than its first epoch's share.
            every_sample = make_loader(loader.dataset, self.collate,
                                       loader.batch_sampler.batch_size, shuffle=False,
                                       num_workers=loader.num_workers)
            data = cache_encoder_states(self.model, every_sample, self.device, self.precision,
                                        self.show)
            return torch.utils.data.DataLoader(
                data, batch_sampler=loader.batch_sampler, collate_fn=self.collate,
                pin_memory=self.device.type == "cuda")
        self.train_loader, self.val_loader = cached(self.train_loader), cached(self.val_loader)

    # -- checkpoints ------------------------------------------------------------------------
    def _checkpoint(self, with_training_state):
        extra = {"epoch": self.state["epoch"], "history": self.history,
                 "best_bleu": self.state["best_bleu"]}
        if with_training_state:
            extra.update(state=self.state, optimizer=self.optimizer.state_dict(),
                         scheduler=self.scheduler.state_dict(), scaler=self.scaler.state_dict(),
                         rng={"torch": torch.get_rng_state(), "python": random.getstate(),
                              "cuda": torch.cuda.get_rng_state_all()
                              if torch.cuda.is_available() else []})
        return model_checkpoint(self.model, self.tokenizer, vars(self.args), **extra)

    def save(self, name, with_training_state=True):
        if self.dist.is_main:
            save_checkpoint(self._checkpoint(with_training_state), self.out / name)
            if name == "last_model.pt":
                drop_old_run(self.out)  # --overwrite: the new run now stands on its own

    def restore(self, ckpt):
        """Continue from last_model.pt: weights (already loaded), optimizer, schedule, RNG."""
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.state.update(ckpt["state"])
        self.history = list(ckpt["history"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        random.setstate(ckpt["rng"]["python"])
        if ckpt["rng"]["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])

    # -- one epoch --------------------------------------------------------------------------
    def train_one_epoch(self, epoch):
        """-> (mean training loss over finite batches, or None; samples seen)."""
        args, state = self.args, self.state
        self.ddp.train()
        sampler = self.train_loader.batch_sampler
        sampler.set_epoch(epoch, state["batches_done"])
        # [loss sum, finite batches] on the device: no host sync per batch. Resuming
        # mid-epoch starts from the sums saved at the interruption.
        sums = torch.tensor(state["partial_loss"], device=self.device, dtype=torch.float64)
        self._partial = sums.clone()
        samples, n = 0, len(self.train_loader)
        bar = tqdm(self.train_loader, desc=f"epoch {epoch}/{args.epochs}", leave=False,
                   disable=not self.show)
        for i, batch in enumerate(bar):
            step_ends = (i + 1) % args.grad_accum_steps == 0 or i + 1 == n
            loss = self._forward_backward(batch, sync=step_ends)
            finite = torch.isfinite(loss)
            sums += torch.stack([torch.where(finite, loss, 0).double(), finite.double()])
            samples += len(batch["ids"])
            if step_ends:
                self._optimizer_step(epoch)
                state["batches_done"] = sampler.start_batch + i + 1
                self._partial = sums.clone()  # what Ctrl-C saves
            if i % 20 == 0 and self.show:
                bar.set_postfix(loss=f"{float(loss):.3f}")
        self._partial = sums  # batches_done stays at the end until the epoch is recorded
        loss_sum, finite_batches = all_reduce_sum(sums.tolist(), self.dist, self.device)
        return (loss_sum / finite_batches if finite_batches else None,
                samples * self.dist.world_size)

    def _forward_backward(self, batch, sync):
        labels = batch["labels"].to(self.device, non_blocking=True)
        # Gradient accumulation: all-reduce only on the micro-batch that ends a step.
        context = self.ddp.no_sync() if self.dist.enabled and not sync else nullcontext()
        with context:
            with autocast(self.device, self.precision):
                loss = self.ddp(labels, label_smoothing=self.args.label_smoothing,
                                word_dropout=self.args.word_dropout,
                                **to_device(batch, self.device))
            self.scaler.scale(loss / self.args.grad_accum_steps).backward()
        return loss.detach()

    def _optimizer_step(self, epoch):
        """Clip and step; a non-finite gradient norm skips the step. One host sync a step.
        Under DDP the norm is of all-reduced gradients, so every process decides alike."""
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, self.args.max_grad_norm)
        finite = bool(torch.isfinite(norm))
        if finite:
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        state = self.state
        state["global_step"] += 1
        state["nonfinite_total"] += not finite
        state["nonfinite_in_a_row"] = 0 if finite else state["nonfinite_in_a_row"] + 1
        if state["nonfinite_in_a_row"] >= MAX_NONFINITE_IN_A_ROW:
            raise TrainingDiverged(
                f"training diverged: {state['nonfinite_in_a_row']} non-finite steps in a row "
                f"(epoch {epoch}, step {state['global_step']})", str(self.out / "last_model.pt"),
                "the last good checkpoint is kept; lower --learning_rate, or use "
                "--precision fp32/bf16")

    def validate(self):
        result = run_evaluation(self.model, self.val_loader, self.tokenizer, self.device,
                                self.settings, precision=self.precision, show_progress=self.show)
        loss, shuffled, tokens = all_reduce_sum(
            [result["loss_sum"], result["shuffled_loss_sum"], result["tokens"]],
            self.dist, self.device)
        hyps = gather_dicts(result["hypotheses"], self.dist)
        dataset = self.val_loader.dataset
        order = sorted(hyps)
        hypotheses = [hyps[i] for i in order]
        references = [dataset.rows[i].text for i in order]
        scores = corpus_scores(hypotheses, references)
        return {"val_loss": loss / tokens, "cond_gap": (shuffled - loss) / tokens,
                "val_bleu": scores["bleu"], "val_chrf": scores["chrf"],
                "diversity": diversity(hypotheses),
                "samples": [{"reference": references[i], "translation": hypotheses[i]}
                            for i in range(min(3, len(order)))]}

    # -- the run ----------------------------------------------------------------------------
    def fit(self):
        args = self.args
        epochs = tqdm(range(self.state["epoch"] + 1, args.epochs + 1), desc="epochs",
                      disable=not self.show, initial=self.state["epoch"], total=args.epochs)
        epoch = self.state["epoch"] + 1
        try:
            for epoch in epochs:
                self.run_epoch(epoch)
                if args.patience and self.state["bad_epochs"] >= args.patience:
                    self._print(f"early stopping: no BLEU gain for {args.patience} epochs")
                    break
        except KeyboardInterrupt:  # anywhere in the loop, between epochs too
            self._interrupted(epoch)
        return self.history

    def run_epoch(self, epoch):
        """Train, validate, record, checkpoint: an epoch counts once it is in last_model.pt."""
        state, start = self.state, time.time()
        train_loss, samples = self.train_one_epoch(epoch)
        train_time = time.time() - start
        metrics = self.validate()
        record = self._record(epoch, train_loss, metrics, time.time() - start,
                              samples / train_time)
        improved = state["best_bleu"] is None or record["val_bleu"] > state["best_bleu"]
        self.history.append(record)
        state.update(epoch=epoch, batches_done=0, partial_loss=[0.0, 0.0],
                     bad_epochs=0 if improved else state["bad_epochs"] + 1)
        if improved:
            state.update(best_bleu=record["val_bleu"], best_epoch=epoch)
            self.save("best_model.pt", with_training_state=False)
        self.save("last_model.pt")  # after best: a crash between them re-runs the epoch
        if self.dist.is_main:
            write_json(self.out / "training_history.json", self.history)
            self._report(record, metrics)

    def _record(self, epoch, train_loss, metrics, epoch_time, samples_per_s):
        div = metrics["diversity"]
        return {"epoch": epoch, "step": self.state["global_step"], "train_loss": train_loss,
                "val_loss": metrics["val_loss"], "val_bleu": metrics["val_bleu"],
                "val_chrf": metrics["val_chrf"], "diversity": div["unique_ratio"],
                "most_common": div["most_common"], "most_common_pct": div["most_common_pct"],
                "cond_gap": metrics["cond_gap"], "lr": self.scheduler.get_last_lr()[-1],
                "learning_rates": learning_rates(self.optimizer),
                "epoch_time_s": epoch_time, "samples_per_s": samples_per_s,
                "nonfinite_steps": self.state["nonfinite_total"],
                "samples": metrics["samples"]}

    def _print(self, message):
        if self.show:
            tqdm.write(message)

    def _report(self, r, metrics):
        self._print(
            f"epoch {r['epoch']}/{self.args.epochs}  train_loss {_num(r['train_loss'])}  "
            f"val_loss {r['val_loss']:.4f}  BLEU {r['val_bleu']:.2f}  chrF {r['val_chrf']:.1f}  "
            f"unique {r['diversity']:.0%}  cond_gap {r['cond_gap']:.3f}  lr {r['lr']:.2e}  "
            f"{r['epoch_time_s']:.1f}s ({r['samples_per_s']:.0f} samples/s)")
        for s in r["samples"]:
            self._print(f"    REF: {s['reference']}\n    HYP: {s['translation']}")
        if metrics["diversity"]["collapsed"]:
            self._print(f"  warning: mode collapse: '{r['most_common']}' is "
                        f"{r['most_common_pct']:.0f}% of validation outputs")
        first = self.history[0]["train_loss"]
        falling = None not in (first, r["train_loss"]) and r["train_loss"] < first
        if falling and r["cond_gap"] < COND_GAP_WARNING:
            self._print(f"  warning: conditioning gap {r['cond_gap']:.3f} while the training "
                        "loss falls: the decoder is ignoring its input (mode collapse ahead); "
                        "try --resampler_input tokens or --word_dropout 0.1")

    def _interrupted(self, epoch):
        """Ctrl-C: save where training stands (mid-epoch too) and say how to resume."""
        if self.state["epoch"] < epoch:  # the epoch is not recorded yet: keep its progress
            self.state["partial_loss"] = self._partial.tolist()
        self.save("last_model.pt")
        if self.dist.is_main:
            write_json(self.out / "training_history.json", self.history)
        argv = [a for a in sys.argv[1:] if a not in ("--overwrite", "--resume")]
        command = shlex.join(["python", Path(sys.argv[0]).name, *argv, "--resume"])
        self._print(f"\ninterrupted in epoch {epoch} after {self.state['batches_done']} batches; "
                    f"saved {self.out / 'last_model.pt'}\nresume with: {command}")
        sys.exit(130)


def _num(value):
    """A loss for the console; None when every batch of the epoch was non-finite."""
    return "n/a" if value is None else f"{value:.4f}"
