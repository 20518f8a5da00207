"""Where training stands, and the files that keep it: last_model.pt (with everything --resume
needs), best_model.pt, training_history.json, and Ctrl-C's save-and-exit."""
import os
import random
import shlex
import signal
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from sonar_t5.common.errors import Terminated, UserError
from sonar_t5.common.files import write_json, written_together
from sonar_t5.models.checkpoint import save_model

from .sharding import full_training_state


@dataclass
class TrainState:
    """Saved in last_model.pt; --resume continues from it."""
    epoch: int = 0  # epochs completed: trained, validated and checkpointed
    batches_done: int = 0  # of the epoch in progress (Ctrl-C saves mid-epoch)
    global_step: int = 0  # optimizer steps
    best_bleu: float = None
    best_epoch: int = None
    bad_epochs: int = 0  # epochs since the best BLEU (--patience)
    nonfinite_total: int = 0  # optimizer steps skipped for a non-finite gradient
    nonfinite_in_a_row: int = 0
    partial_loss: list = field(default_factory=lambda: [0.0, 0.0])  # [loss sum, finite
    # batches] of the epoch in progress, so a resumed epoch reports the loss of all of it
    logged_loss: list = field(default_factory=lambda: [0.0, 0.0])  # partial_loss at the
    # epoch's last train_log.jsonl line: a resumed run's next line averages from there too
    partial_loss_by_rank: list = None  # under torchrun: every process's partial_loss
    seconds: float = 0.0  # training and validation time of the completed epochs
    planned_epochs: int = None  # --time_budget: the epochs that fit, set after the first
    decay_from: list = None  # --time_budget: the schedule's [decay_start, total] steps

    def end_epoch(self, epoch, bleu, seconds):
        """Record a finished epoch. -> whether its BLEU is the best so far."""
        improved = self.best_bleu is None or bleu > self.best_bleu
        self.seconds += seconds
        self.epoch, self.batches_done = epoch, 0
        self.partial_loss, self.logged_loss = [0.0, 0.0], [0.0, 0.0]
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        if improved:
            self.best_bleu, self.best_epoch = bleu, epoch
        return improved


# Flags a resumed run may change: where and how it runs, not what it learns.
RESUMABLE_CHANGES = {
    "epochs", "patience", "resume", "overwrite", "output_dir", "device", "precision",
    "num_workers", "num_threads", "eval_batch_size", "compile", "fused_adamw",
    "gradient_checkpointing", "no_encoder_cache", "encoder_cache_dir", "skip_missing",
    "num_beams", "max_new_tokens", "no_repeat_ngram_size", "repetition_penalty",
    "length_penalty", "train_features", "train_manifest", "val_features", "val_manifest",
    "test_features", "test_manifest", "config", "log_every", "report_to", "sharding",
    "defaults"}  # what was chosen for unset flags: the flags themselves are compared
TRAINING_STATE = ("state", "optimizer", "scheduler", "scaler", "rng", "history")


def check_resume(args, ckpt, path):
    """--resume continues the run last_model.pt holds, as it was set up: refuse flags that
    would change what it learns. -> a note when --epochs changes the schedule, else None."""
    missing = [key for key in TRAINING_STATE if key not in ckpt]
    if missing:
        raise UserError(f"cannot resume: the checkpoint has no training state ({', '.join(missing)})",
                        str(path), "last_model.pt as a training run wrote it holds it "
                                   "(best_model.pt does not); or start a new run")
    saved = ckpt.get("train_args", {})
    for flag in list(args.defaults["chosen"]):  # left unset: the run's own value, whatever
        if flag in saved:                       # today's default is
            setattr(args, flag, saved[flag])
            args.defaults["chosen"][flag] = saved[flag]
    given = vars(args)
    differ = [f"--{k} {given[k]} (the run: {saved[k]})" for k in sorted(saved)
              if k in given and k not in RESUMABLE_CHANGES and given[k] != saved[k]]
    if differ:
        raise UserError(f"--resume with settings that differ from the run's: "
                        f"{'; '.join(differ[:4])}{' ...' if len(differ) > 4 else ''}", str(path),
                        "resume with the run's own flags (its config.json lists them), or start "
                        "a new run with --overwrite or another --output_dir")
    if saved.get("epochs") not in (None, args.epochs):
        return (f"--epochs {args.epochs} (the run had {saved['epochs']}): the learning-rate "
                f"schedule now decays linearly to 0 at epoch {args.epochs}")
    return None


def batch_seed(seed, epoch, batch_index, rank):
    """The RNG seed of one training batch (dropout, word dropout), a function of where the batch
    stands in the run: resumed mid-epoch (Ctrl-C, SIGTERM), a run draws what the uninterrupted
    run drew."""
    return (seed * 1_000_003 + epoch * 10_007 + batch_index * 101 + rank) % 2**62


def save_progress(output_dir, model, tokenizer, state, history, optimization, improved,
                  run_config, writes=True):
    """In output_dir: best_model.pt if improved, last_model.pt, training_history.json and
    config.json (run_config; its flags are the checkpoints' train_args),
    renamed into place together once all are written: a crash or kill finds the four of one
    epoch (but in the microseconds between the renames); a --resume continues after the epoch
    last_model.pt holds.
    config.json is written with the checkpoints, so a start or a --resume that fails before
    its first checkpoint leaves it as it was.
    Under torchrun every process calls this (a sharded model's state is gathered from all);
    the one that `writes` writes."""
    model_state, optimizer_state = full_training_state(model, optimization.optimizer, writes)
    if not writes:
        return
    out, flags = Path(output_dir), run_config["args"]
    common = dict(epoch=state.epoch, history=history, best_bleu=state.best_bleu,
                  state_dict=model_state)
    with written_together():  # a kill finds the checkpoints and the history of one epoch
        if improved:
            save_model(out / "best_model.pt", model, tokenizer, flags, **common)
        save_model(out / "last_model.pt", model, tokenizer, flags, **common,
                   state=asdict(state), **optimization.state_dict(optimizer_state),
                   rng=_rng_state())
        write_json(out / "training_history.json", history)
        write_json(out / "config.json", run_config)


def restore_progress(ckpt, model, optimization, rank=0):
    """--resume: the optimizer, schedule, scaler and RNG streams of last_model.pt (the weights
    were loaded with the model, sharded or not); each process's own share of a stopped
    epoch's loss. -> (TrainState, history)."""
    optimization.load_state_dict(ckpt, model)
    torch.set_rng_state(ckpt["rng"]["torch"])
    random.setstate(ckpt["rng"]["python"])
    if ckpt["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
    state = TrainState(**ckpt["state"])
    if state.partial_loss_by_rank and rank < len(state.partial_loss_by_rank):
        state.partial_loss = state.partial_loss_by_rank[rank]
    state.partial_loss_by_rank = None
    return state, list(ckpt["history"])


def _rng_state():
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def resume_command():
    """The command line that resumes this run: the same one with --resume."""
    argv = [a for a in sys.argv[1:] if a not in ("--overwrite", "--resume")]
    launcher = ["python"]
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun's options are not in sys.argv
        launcher = ["torchrun", f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', '?')}"]
        if os.environ.get("GROUP_WORLD_SIZE", "1") != "1":
            launcher[1:] = ["<the run's torchrun options>"]
    return shlex.join([*launcher, Path(sys.argv[0]).name, *argv, "--resume"])


def exit_interrupted(output_dir, epoch, state, stop, show=True):
    """After the save on Ctrl-C or SIGTERM: say where training stood and how to resume (show:
    the process that saved), and exit 130 or 143 as a shell does for these signals."""
    where = (f"after epoch {epoch}" if state.epoch >= epoch else
             f"in epoch {epoch} after {state.batches_done} batches")
    if show:
        tqdm.write(f"\n{_stop_name(stop)} {where}; saved {Path(output_dir) / 'last_model.pt'}"
                   f"\nresume with: {resume_command()}")
    sys.exit(_stop_status(stop))


def exit_during_scoring(stop):
    """Ctrl-C or SIGTERM while the best checkpoint is scored at the end: training is complete
    and saved; a --resume of the finished run does the scoring again."""
    tqdm.write(f"\n{_stop_name(stop)} while scoring best_model.pt; training is complete and "
               f"saved\nscore it with: {resume_command()}")
    sys.exit(_stop_status(stop))


def _stop_name(stop):
    return "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"


def _stop_status(stop):
    return 143 if isinstance(stop, Terminated) else 130  # as a shell reports these signals


def ignore_further_stops():
    """A second Ctrl-C (or SIGTERM) while the first one's save runs is ignored, so the save
    completes and the exit is clean."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
