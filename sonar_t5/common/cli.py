"""Command-line helpers shared by the scripts: help that shows defaults, and the one table of
numeric flag ranges that every script checks before any work."""
import argparse
import math
from dataclasses import dataclass

from .errors import UserError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):
        if action.default in (None, False):  # None: falls back elsewhere; False: a switch
            return action.help
        return super()._get_help_string(action)


@dataclass(frozen=True)
class Range:
    """A finite number in [low, high], either end open or unbounded."""
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def allows(self, value):
        if not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self):
        if self.high == math.inf:
            if self.low == -math.inf:
                return "a finite number"
            return f"{'above' if self.low_open else 'at least'} {_plain(self.low)}"
        return (f"in {'(' if self.low_open else '['}{_plain(self.low)}, {_plain(self.high)}"
                f"{')' if self.high_open else ']'}")


def _plain(number):
    return str(int(number)) if float(number).is_integer() else str(number)


AT_LEAST_0, AT_LEAST_1, ABOVE_0 = Range(0), Range(1), Range(0, low_open=True)
PROBABILITY = Range(0, 1, high_open=True)

# Flags renamed since runs were first written, {old: new}: old command lines (an alias),
# config files, and the train_args of older checkpoints and config.json files still work.
RENAMED_FLAGS = {"encoder_dim": "encoder_d_model"}  # the config's name for a width: d_model


def with_current_flag_names(flags):
    """{flag: value} with any old flag name replaced by its current one."""
    return {RENAMED_FLAGS.get(k, k): v for k, v in flags.items()}


# Every numeric flag of every script, by its name: one table, checked by check_flag_ranges().
FLAG_RANGES = {
    # data
    "max_frames": AT_LEAST_0, "max_target_length": Range(2), "num_workers": AT_LEAST_0,
    "num_threads": AT_LEAST_0,
    # model
    "encoder_d_model": Range(8), "encoder_layers": AT_LEAST_1, "vocab_size": Range(16),
    "num_latents": AT_LEAST_1, "num_layers": AT_LEAST_1, "hidden_dim": AT_LEAST_1,
    "num_heads": AT_LEAST_1,
    # optimisation
    "epochs": AT_LEAST_1, "batch_size": AT_LEAST_1, "global_batch_size": AT_LEAST_1, "learning_rate": AT_LEAST_0,
    "encoder_lr_scale": AT_LEAST_0, "warmup_steps": AT_LEAST_0, "weight_decay": AT_LEAST_0,
    "time_budget": AT_LEAST_0, "contrastive_weight": AT_LEAST_0,
    "label_smoothing": PROBABILITY, "word_dropout": PROBABILITY, "grad_accum_steps": AT_LEAST_1,
    "max_grad_norm": ABOVE_0, "seed": Range(0, 2**32 - 1), "log_every": AT_LEAST_1,
    # evaluation and generation
    "eval_batch_size": AT_LEAST_1, "patience": AT_LEAST_0, "num_beams": AT_LEAST_1,
    "max_new_tokens": AT_LEAST_1, "no_repeat_ngram_size": AT_LEAST_0,
    "repetition_penalty": ABOVE_0, "length_penalty": Range(),
    # validate_perceiver_model.py
    "limit": AT_LEAST_1, "num_samples": AT_LEAST_0, "attention_plot": AT_LEAST_0,
}


def check_flag_ranges(args):
    """One line naming the first flag whose value is out of its range (flags left unset are
    None and skipped)."""
    for name in FLAG_RANGES:
        value = getattr(args, name, None)
        problem = None if value is None else out_of_range(name, value)
        if problem:
            raise UserError(f"--{problem}", "command line")


def out_of_range(name, value):
    """-> "NAME must be ... (got VALUE)" where value is not a number in NAME's range (a flag's,
    or the same setting read from a file or given in Python), else None."""
    allowed = FLAG_RANGES[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{name} must be a number {allowed.describe()} (got {value!r})"
    if not allowed.allows(value):
        return f"{name} must be {allowed.describe()} (got {value})"
    return None
