"""Where training stands, and the files that keep it: last_model.pt (with everything --resume
needs), best_model.pt, training_history.json, and Ctrl-C's save-and-exit."""
import random
import shlex
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from common.files import write_json
from models.checkpoint import save_model


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

    def end_epoch(self, epoch, bleu):
        """Record a finished epoch. -> whether its BLEU is the best so far."""
        improved = self.best_bleu is None or bleu > self.best_bleu
        self.epoch, self.batches_done, self.partial_loss = epoch, 0, [0.0, 0.0]
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        if improved:
            self.best_bleu, self.best_epoch = bleu, epoch
        return improved


def save_progress(args, model, tokenizer, state, history, optimization, improved):
    """best_model.pt if improved, then last_model.pt, then training_history.json. An epoch
    counts once it is in last_model.pt: a crash between the two re-runs the epoch."""
    out = Path(args.output_dir)
    common = dict(epoch=state.epoch, history=history, best_bleu=state.best_bleu)
    if improved:
        save_model(out / "best_model.pt", model, tokenizer, vars(args), **common)
    save_model(out / "last_model.pt", model, tokenizer, vars(args), **common,
               state=asdict(state), **optimization.state_dict(), rng=_rng_state())
    write_json(out / "training_history.json", history)


def restore_progress(ckpt, optimization):
    """--resume: the optimizer, schedule, scaler and RNG streams of last_model.pt (the weights
    were loaded with the model). -> (TrainState, history)."""
    optimization.load_state_dict(ckpt)
    torch.set_rng_state(ckpt["rng"]["torch"])
    random.setstate(ckpt["rng"]["python"])
    if ckpt["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
    return TrainState(**ckpt["state"]), list(ckpt["history"])


def _rng_state():
    return {"torch": torch.get_rng_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def exit_interrupted(args, epoch, state):
    """After Ctrl-C's save: say where training stood and how to resume; exit status 130."""
    argv = [a for a in sys.argv[1:] if a not in ("--overwrite", "--resume")]
    command = shlex.join(["python", Path(sys.argv[0]).name, *argv, "--resume"])
    tqdm.write(f"\ninterrupted in epoch {epoch} after {state.batches_done} batches; saved "
               f"{Path(args.output_dir) / 'last_model.pt'}\nresume with: {command}")
    sys.exit(130)
