"""One pass over a data set: losses (true and shuffled prefixes) and batched generate()."""
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from training.precision import autocast


@dataclass
class GenerationSettings:
    num_beams: int = 4
    max_new_tokens: int = 64
    no_repeat_ngram_size: int = 0
    repetition_penalty: float = 1.0
    length_penalty: float = 1.0

    def generate_kwargs(self):
        kwargs = asdict(self)
        kwargs["early_stopping"] = self.num_beams > 1
        return kwargs

    @classmethod
    def from_args(cls, args, defaults=None):
        """Flags left unset (None) fall back to `defaults` (e.g. the checkpoint's)."""
        base = asdict(cls(**(defaults or {})))
        given = {k: getattr(args, k) for k in base if getattr(args, k, None) is not None}
        return cls(**{**base, **given})


def add_generation_args(parser, default_note=None):
    """The generate() flags. Unset flags stay None and fall back to the defaults
    (training) or to the checkpoint's settings (validation): `default_note` says which."""
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


def to_device(batch, device):
    """The model inputs of a batch (raw features or cached encoder states) on device."""
    keys = ("states", "states_mask") if "states" in batch else ("features", "mask")
    non_blocking = device.type == "cuda"
    return {k: batch[k].to(device, non_blocking=non_blocking) for k in keys}


@torch.no_grad()
def run_evaluation(model, loader, tokenizer, device, settings, *, precision="fp32",
                   generate=True, desc="validating", show_progress=True):
    """-> {loss_sum, shuffled_loss_sum, tokens, hypotheses {index: text}} for this process.

    shuffled_loss_sum is the loss with each prefix given to another sample of the batch
    (rolled by one): the conditioning gap is (shuffled - true) per token.
    """
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, shuffled loss, tokens
    hypotheses = {}
    for batch in tqdm(loader, desc=desc, leave=False, disable=not show_progress):
        inputs = to_device(batch, device)
        labels = batch["labels"].to(device)
        with autocast(device, precision):
            prefix, prefix_mask = model.prefix(*model.bridge_inputs(**inputs))
            loss = model.decoder_loss(prefix, prefix_mask, labels, reduction="sum")
            shuffled = model.decoder_loss(prefix.roll(1, dims=0), prefix_mask.roll(1, dims=0),
                                          labels, reduction="sum")
            ids = (model.generate(prefix, prefix_mask, **settings.generate_kwargs())
                   if generate else None)
        sums += torch.stack([loss.double(), shuffled.double(),
                             (labels != -100).sum().double()])
        if ids is not None:
            for index, row in zip(batch["index"].tolist(), ids.tolist()):
                hypotheses[index] = tokenizer.decode(row[1:])  # row[0] is the start token
    loss, shuffled, tokens = sums.tolist()
    return {"loss_sum": loss, "shuffled_loss_sum": shuffled, "tokens": tokens,
            "hypotheses": hypotheses}
