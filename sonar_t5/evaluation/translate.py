"""Translate feature arrays with a trained model, from Python: a notebook's qualitative
analysis, or a script of one's own. The validation script loads its model the same way.

    import numpy as np
    from sonar_t5.evaluation.translate import load_translator

    translator = load_translator("runs/demo/best_model.pt")   # or a folder exported from one
    translator.translate([np.load("clip_0001.npy"), np.load("clip_0002.npy")])
    # -> ['first sentence', 'second sentence']
    translator.translate(arrays, num_beams=8, length_penalty=1.2)   # generate() overrides
    translator.settings      # the generate() settings in use (GenerationSettings)

Each array is one sample's features as a feature file holds them: (frames, feature_dim),
numpy or torch, any float dtype; a 1-d array is one frame (a pooled 1024-d embedding).
Longer sequences are subsampled to the checkpoint's --max_frames, and the training set's
feature statistics (--normalize_features) are applied inside the model, as in training.
Settings default to the validation script's: those the checkpoint's training validated
with, but beam search (4 beams) where training validated greedily.
"""
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from sonar_t5.common.device import resolve_device
from sonar_t5.common.errors import UserError
from sonar_t5.common.precision import PRECISIONS, autocast, resolve_precision
from sonar_t5.data.features import subsample
from sonar_t5.models.checkpoint import load_model

from .generation import GenerationSettings, generate_texts


@dataclass
class Translator:
    model: torch.nn.Module
    tokenizer: object
    checkpoint: dict  # the checkpoint's dict (an exported folder's config.json)
    device: torch.device
    precision: str
    settings: GenerationSettings
    max_frames: int

    @property
    def input_dim(self):
        return self.model.encoder.config.input_dim

    @torch.no_grad()
    def translate(self, features, batch_size=32, **generation):
        """features: a list of arrays, one per sample -> their translations, in order.
        generation: GenerationSettings fields for this call (num_beams=8, ...)."""
        unknown = sorted(set(generation) - set(asdict(self.settings)))
        if unknown:
            raise TypeError(f"unknown generation setting {unknown[0]!r} (the settings: "
                            f"{', '.join(asdict(self.settings))})")
        settings = replace(self.settings, **generation)  # a ValueError names a bad value
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number of at least 1 (got "
                             f"{batch_size!r})")
        if isinstance(features, (str, bytes, np.ndarray, torch.Tensor)):
            raise TypeError("features must be a list of arrays, one per sample (got a "
                            f"{type(features).__name__}; for one sample, pass [array])")
        samples = [self._sample(n, x) for n, x in enumerate(features)]
        order = sorted(range(len(samples)), key=lambda n: -samples[n].shape[0])  # less padding
        texts = {}
        self.model.eval()
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            lengths = torch.tensor([samples[n].shape[0] for n in chunk])
            inputs = torch.nn.utils.rnn.pad_sequence([samples[n] for n in chunk],
                                                     batch_first=True)
            mask = torch.arange(inputs.shape[1]) < lengths[:, None]
            with autocast(self.device, self.precision):
                prefix = self.model.prefix(inputs.to(self.device), mask.to(self.device))
                texts.update(zip(chunk, generate_texts(self.model, self.tokenizer, prefix,
                                                       settings)))
        return [texts[n] for n in range(len(samples))]

    def _sample(self, n, x):
        if not torch.is_tensor(x):
            if not isinstance(x, (np.ndarray, list, tuple)):
                raise TypeError(f"sample {n} is a {type(x).__name__}, not an array of features"
                                + (" (load the file first, e.g. np.load(path))"
                                   if isinstance(x, (str, bytes)) or hasattr(x, "__fspath__")
                                   else ""))
            x = np.asarray(x)
            if x.dtype.kind not in "fiub":  # objects, strings
                raise TypeError(f"sample {n}: an array of {x.dtype}, not numbers")
            x = torch.from_numpy(x)
        x = x.float()
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.input_dim or x.shape[0] == 0:
            raise ValueError(f"sample {n}: features of shape {tuple(x.shape)}; the model reads "
                             f"(frames, {self.input_dim}) with at least one frame")
        if not torch.isfinite(x).all():
            raise ValueError(f"sample {n}: its features hold NaN or Inf (the model would "
                             "translate garbage)")
        return subsample(x, self.max_frames)


def load_translator(checkpoint, device="auto", precision="fp32", **generation):
    """A checkpoint (best_model.pt, last_model.pt) or an exported folder -> Translator on
    `device` ("auto": CUDA when available). generation: GenerationSettings fields that
    replace the checkpoint's (None = keep)."""
    device, precision = _device_and_precision(device, precision)
    unknown = sorted(set(generation) - set(asdict(GenerationSettings())))
    if unknown:
        raise TypeError(f"unknown generation setting {unknown[0]!r} (the settings: "
                        f"{', '.join(asdict(GenerationSettings()))})")
    model, tokenizer, ckpt = load_model(checkpoint, device)
    settings = GenerationSettings.for_scoring(ckpt.get("train_args", {}), generation)
    return Translator(model, tokenizer, ckpt, device, precision, settings,
                      model.config.max_frames)


def _device_and_precision(device, precision):
    """The Python API's arguments, checked as their flags are: a ValueError naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    try:
        device = resolve_device(device) if isinstance(device, str) else torch.device(device)
        return device, resolve_precision(precision, device)
    except UserError as error:  # worded for the flags: say it for the arguments
        raise ValueError(f"device={str(device)!r}, precision={precision!r}: "
                         f"{str(error).split(', --')[0]}") from None
    except (TypeError, RuntimeError) as error:
        raise ValueError(f"device={device!r}: {error}") from None
