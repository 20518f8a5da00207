"""Tokenizers with T5's ids (pad 0, eos 1, unk 2), driven through SentencePiece directly.

Both kinds are a SentencePiece model: the pretrained T5 tokenizer is its `spiece.model`, and
one trained here on the training texts is another. Driving sentencepiece directly avoids
transformers 5.x's T5Tokenizer pitfalls (T5Tokenizer(vocab_file=...) maps every word to
<unk>; from_pretrained needs protobuf) and lets the model's bytes travel inside
the checkpoint.
"""
import io
import re

import sentencepiece as spm
import torch

from sonar_t5.common.errors import UserError

PAD_ID, EOS_ID, UNK_ID = 0, 1, 2


class Tokenizer:
    pad_id, eos_id, unk_id = PAD_ID, EOS_ID, UNK_ID

    def __init__(self, model_bytes: bytes, source="tokenizer"):
        """source: where the bytes come from (a checkpoint, a spiece.model), for errors."""
        self.model_bytes = bytes(model_bytes)
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=self.model_bytes)
        except Exception:  # sentencepiece raises RuntimeError or its own parse errors
            raise UserError("the SentencePiece tokenizer is corrupt (cannot be parsed)",
                            str(source), "use another copy of the file") from None
        ids = (self.sp.pad_id(), self.sp.eos_id(), self.sp.unk_id())
        if ids != (PAD_ID, EOS_ID, UNK_ID):
            raise UserError(f"tokenizer has pad/eos/unk ids {ids}, T5 needs (0, 1, 2)",
                            str(source))

    @property
    def vocab_size(self):
        return self.sp.get_piece_size()

    def encode(self, text, max_length=None):
        """Token ids ending in eos, truncated to max_length (eos kept)."""
        ids = self.sp.encode(text)
        if max_length is not None:
            ids = ids[: max_length - 1]
        return ids + [EOS_ID]

    def decode(self, ids):
        """Text up to the first eos; pad and ids beyond the SentencePiece model (T5's extra
        ids) are dropped."""
        ids = [int(i) for i in ids]
        if EOS_ID in ids:
            ids = ids[: ids.index(EOS_ID)]
        return self.sp.decode([i for i in ids if PAD_ID != i < self.vocab_size])

    def to_tensor(self):
        return torch.frombuffer(bytearray(self.model_bytes), dtype=torch.uint8)

    @classmethod
    def from_tensor(cls, tensor, source="checkpoint"):
        return cls(tensor.cpu().numpy().tobytes(), source)


def train_tokenizer(texts, vocab_size=1000):
    """A unigram SentencePiece model on the training texts, with T5's special ids."""
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
            model_type="unigram", character_coverage=1.0, pad_id=PAD_ID, eos_id=EOS_ID,
            unk_id=UNK_ID, bos_id=-1, hard_vocab_limit=False, num_threads=2, minloglevel=2)
    except RuntimeError as error:
        needed = re.search(r"(\d+) vs (\d+)", str(error))
        if "Vocabulary size is smaller than required" not in str(error):
            raise
        need = f" (they need at least {needed.group(2)})" if needed else ""
        raise UserError(f"--vocab_size {vocab_size} is smaller than the training texts' "
                        f"characters and special tokens{need}", "--vocab_size",
                        "use a larger vocabulary, e.g. 1000") from None
    return Tokenizer(model.getvalue())


def load_pretrained_tokenizer(t5_model):
    """The `spiece.model` of a local T5 directory or a hub model already in the HF cache."""
    from transformers.utils import cached_file
    try:
        path = cached_file(t5_model, "spiece.model")
    except (OSError, ValueError) as error:
        raise UserError(f"no SentencePiece tokenizer (spiece.model) found for '{t5_model}'",
                        f"{type(error).__name__}",
                        "point --t5_model at a local save_pretrained directory with "
                        "spiece.model, or use a from-scratch preset") from None
    with open(path, "rb") as f:
        return Tokenizer(f.read(), path)
