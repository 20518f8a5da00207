"""T5 glue: a T5 decoder + LM head from a hub name, a local directory or a from-scratch preset.

The T5 encoder is replaced by a parameter-free stand-in: its input is our prefix, passed as
encoder_outputs, so the encoder is never run, trained, saved or counted.
"""
import os

from torch import nn
from transformers import T5Config, T5ForConditionalGeneration

from sonar_t5.common.errors import UserError

# From-scratch shapes. Names are not the hub's so nobody mistakes random weights for t5-small.
# num_layers == num_decoder_layers always: with them unequal, generate()'s cache fails with an
# IndexError in transformers' cache_utils.
T5_PRESETS = {
    "t5-tiny": dict(d_model=128, d_ff=512, d_kv=32, num_heads=4, num_layers=2),
    "scratch-t5-mini": dict(d_model=256, d_ff=1024, d_kv=32, num_heads=8, num_layers=4),
    "scratch-t5-small": dict(d_model=512, d_ff=2048, d_kv=64, num_heads=8, num_layers=6),
    "scratch-t5-base": dict(d_model=768, d_ff=3072, d_kv=64, num_heads=12, num_layers=12),
}
T5_IDS = dict(decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)


def checkpoint_activations(module):
    """transformers' gradient checkpointing on a T5 model or stack (non-reentrant): newer
    transformers call it activation_checkpointing_enable and warn at the old name, which
    older ones (4.x) alone have."""
    kwargs = {"use_reentrant": False}
    if hasattr(module, "activation_checkpointing_enable"):
        module.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


class NoEncoder(nn.Module):
    """Stands where T5's encoder was; generate() reads main_input_name from it."""

    main_input_name = "input_ids"

    def forward(self, *args, **kwargs):
        raise RuntimeError("the T5 encoder is dropped in SonarT5; pass encoder_outputs")


def is_preset(t5_model):
    return t5_model in T5_PRESETS


def preset_config(t5_model, vocab_size):
    shape = T5_PRESETS[t5_model]
    return T5Config(vocab_size=vocab_size, num_decoder_layers=shape["num_layers"],
                    dropout_rate=0.1, feed_forward_proj="relu", **shape, **T5_IDS)


def _drop_encoder(t5):
    t5.encoder = NoEncoder()
    t5.config.use_cache = True
    return t5


def t5_from_config(config_dict):
    """Random-weight T5 decoder from a config dict (weights come from a checkpoint)."""
    return _drop_encoder(T5ForConditionalGeneration(T5Config.from_dict(config_dict)))


def load_t5(t5_model, vocab_size=None):
    """Pretrained T5 from a hub name or local directory, or a preset built from scratch."""
    if is_preset(t5_model):
        return _drop_encoder(T5ForConditionalGeneration(preset_config(t5_model, vocab_size)))
    try:
        t5 = T5ForConditionalGeneration.from_pretrained(t5_model)
    except Exception as error:  # missing, truncated, refused (weights-only) or foreign files
        why = (f"the directory holds no loadable T5 model ({_first_line(error)})"
               if os.path.isdir(t5_model)
               else "not a local directory, not in the HF cache, and the hub is unreachable")
        raise UserError(f"cannot load T5 model '{t5_model}': {why}", "--t5_model",
                        "save it once with save_pretrained and pass that directory, or use a "
                        f"from-scratch preset: {', '.join(T5_PRESETS)}") from None
    return _drop_encoder(t5)


def _first_line(error):
    """The gist of a loading error, without library advice to turn unsafe loading on."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "WeightsUnpickler error" in line or "Unsupported global" in line:
            return "it holds Python objects beyond tensors; refused"
    text = lines[0] if lines else type(error).__name__
    if "weights_only" in text or "Weights only" in text:
        return "not a readable weights file"
    return text[:100]
