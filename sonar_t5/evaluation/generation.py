"""One pass over a data set: losses (true and shuffled prefixes) and batched generate()."""
from dataclasses import asdict, dataclass

import torch
import torch.distributed as torch_dist

from sonar_t5.common.cli import out_of_range
from sonar_t5.common.precision import autocast
from sonar_t5.common.progress import progress
from sonar_t5.data.dataset import model_inputs, naming_the_batch_if_out_of_memory


INTEGER_SETTINGS = ("num_beams", "max_new_tokens", "no_repeat_ngram_size")


@dataclass
class GenerationSettings:
    """generate()'s settings, and the one home of their defaults: the defaults below; the
    quick decoding --demo validates each epoch with (QUICK); and a checkpoint's default
    decoding (for_scoring), which validating it, the end-of-training scores, an export's
    generation_config.json and a notebook's translator all use."""
    num_beams: int = 4
    max_new_tokens: int = 64
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0

    def __post_init__(self):
        """A setting given in Python (translate(num_beams=0)) or read from a file is checked
        as its flag is: a ValueError naming it."""
        for name, value in asdict(self).items():
            problem = out_of_range(name, value)
            if problem:
                raise ValueError(problem)
            if name in INTEGER_SETTINGS and not float(value).is_integer():
                raise ValueError(f"{name} must be a whole number (got {value})")

    # Each epoch's validation in --demo: greedy and short, for speed on a CPU.
    QUICK = {"num_beams": 1, "max_new_tokens": 32}

    def generate_kwargs(self):
        kwargs = asdict(self)
        kwargs["early_stopping"] = self.num_beams > 1
        return kwargs

    @classmethod
    def from_args(cls, args):
        """Training's per-epoch validation: the flags given (the parsed flags, or a
        checkpoint's train_args), else the defaults."""
        given = args if isinstance(args, dict) else vars(args)
        base = asdict(cls())
        return cls(**{**base, **{k: given[k] for k in base if given.get(k) is not None}})

    @classmethod
    def given_in(cls, args):
        """{field: the flag's value, or None where unset}."""
        return {k: getattr(args, k, None) for k in asdict(cls())}

    @classmethod
    def for_scoring(cls, train_args, given=None):
        """Scoring a checkpoint (the validation script, the end of training, a notebook): the
        settings given (None = unset), else the ones its training validated with, but beam
        search where training validated greedily for speed (the demo does): 4 beams."""
        saved = {k: train_args[k] for k in asdict(cls()) if train_args.get(k) is not None}
        if saved.get("num_beams") == 1:
            saved["num_beams"] = cls().num_beams
        given = {k: v for k, v in (given or {}).items() if v is not None}
        return cls(**{**saved, **given})


def decoding(generation):
    """generate()'s settings in a few words: "greedy", "beam 4", "beam 4, lp 2.0"."""
    words = ["greedy" if generation["num_beams"] == 1 else f"beam {generation['num_beams']}"]
    for key, short, neutral in (("no_repeat_ngram_size", "no-repeat", 0),
                                ("repetition_penalty", "rp", 1.0), ("length_penalty", "lp", 1.0)):
        if generation.get(key, neutral) != neutral:
            words.append(f"{short} {generation[key]}")
    return ", ".join(words)


def add_generation_args(parser, default_note=None):
    """The generate() flags. Unset flags stay None and fall back to the defaults
    (training) or to GenerationSettings.for_scoring's (validation): `default_note` says
    which."""
    group = parser.add_argument_group("generation")
    d = GenerationSettings()
    note = lambda value: f" (default: {default_note or value})"  # noqa: E731
    group.add_argument("--num_beams", type=int, help="beam size, 1 = greedy" + note(d.num_beams))
    group.add_argument("--max_new_tokens", type=int,
                       help="longest translation, in tokens" + note(d.max_new_tokens))
    group.add_argument("--no_repeat_ngram_size", type=int,
                       help="forbid repeating any n-gram of this size (0 = off; 3 guards "
                            "against loops)" + note(d.no_repeat_ngram_size))
    group.add_argument("--repetition_penalty", type=float,
                       help="> 1 discourages repeated tokens" + note(d.repetition_penalty))
    group.add_argument("--length_penalty", type=float,
                       help="beam search: > 1 favours longer outputs" + note(d.length_penalty))
    return group


@torch.no_grad()
def run_evaluation(model, loader, tokenizer, device, settings, *, precision="fp32",
                   generate=True, desc="validating", show_progress=True,
                   across_processes=True, after_batch=None):
    """-> {val_loss, cond_gap, hypotheses {index: text}}.

    The conditioning gap (nats/token) is the loss with each prefix given to another sample
    of the batch (rolled by one) minus the loss with its own: near 0, the decoder ignores its
    input. Under torchrun the losses are summed over every process (each scores its own
    batches; across_processes=False: one process scores the whole loader alone); the
    hypotheses are this process's. after_batch(i): called after batch i (training checks for
    a stop signal there, so a stop does not wait for the whole validation).
    """
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, shuffled loss, tokens
    hypotheses = {}
    for i, batch in enumerate(progress(loader, desc=desc, leave=False,
                                       disable=not show_progress)):
        labels = batch["labels"].to(device)
        with naming_the_batch_if_out_of_memory(batch), autocast(device, precision):
            prefix = model.prefix(**model_inputs(batch, device))
            loss = model.decoder_loss(prefix, labels, reduction="sum")
            shuffled = model.decoder_loss(prefix.roll(1, dims=0), labels, reduction="sum")
            texts = generate_texts(model, tokenizer, prefix, settings) if generate else []
        sums += torch.stack([loss.double(), shuffled.double(),
                             (labels != -100).sum().double()])
        hypotheses.update(zip(batch["index"].tolist(), texts))
        if after_batch is not None:
            after_batch(i)
    if across_processes and torch_dist.is_initialized():
        torch_dist.all_reduce(sums)
    loss, shuffled, tokens = sums.tolist()
    return {"val_loss": loss / tokens, "cond_gap": (shuffled - loss) / tokens,
            "hypotheses": hypotheses}


def generate_texts(model, tokenizer, prefix, settings):
    """A batch's prefixes (B, num_latents, d_model) -> B translations: generate() and
    SentencePiece decoding, the one place either happens."""
    ids = model.generate(prefix, **settings.generate_kwargs())
    return [tokenizer.decode(row[1:]) for row in ids.tolist()]  # row[0] is the start token
