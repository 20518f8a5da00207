"""The bridges from encoder states to the T5 prefix, and everything the toolkit knows of each.

A bridge reads what the encoder gives (its pooled SONAR embedding, or its token states) and
writes the prefix T5's decoder reads, (B, num_latents, d_model). Each kind is registered here
once, with:
- title: its name in words;
- build: (SonarT5Config, d_model, input_dim) -> nn.Module, whose forward(states, mask)
  returns the prefix;
- default_input: what it reads unless --resampler_input says otherwise;
- no_decay: endings of its parameter names that AdamW does not weight-decay (learned tokens);
- attention_map: whether forward(..., return_attention=True) also returns each layer's
  attention over the input frames (validate_perceiver_model.py --attention_plot);
- fixed_layers: its layer count when --num_layers does not set it (the results table).

A third bridge is one register_bridge() call: the flags, the optimizer, validation, the
attention plots and the results table all read this registry.
"""
from dataclasses import dataclass
from typing import Callable

from sonar_t5.common.errors import UserError

from .perceiver import PerceiverResampler
from .projection_bridge import ProjectionBridge

RESAMPLER_INPUTS = ("pooled", "tokens")


@dataclass(frozen=True)
class Bridge:
    title: str
    build: Callable
    default_input: str
    no_decay: tuple = ()
    attention_map: bool = False
    fixed_layers: int = None


BRIDGES = {}  # name -> Bridge, in registration order (--bridge's choices)


def register_bridge(name, bridge):
    if bridge.default_input not in RESAMPLER_INPUTS:
        raise ValueError(f"bridge {name}: default_input must be one of {RESAMPLER_INPUTS}")
    BRIDGES[name] = bridge


def build_bridge(config, d_model, input_dim):
    """The bridge of config.bridge. input_dim: the width of what it reads, the pooled
    embedding (1024) or the encoder's token states (its own width)."""
    if config.bridge not in BRIDGES:
        raise UserError(f"unknown bridge '{config.bridge}'", "the model's configuration",
                        f"use one of: {', '.join(BRIDGES)}")
    return BRIDGES[config.bridge].build(config, d_model, input_dim)


def layer_count(bridge, num_layers):
    """A bridge's layers: --num_layers, unless its kind has a fixed count."""
    return BRIDGES[bridge].fixed_layers or num_layers


def _perceiver(config, d_model, input_dim):
    return PerceiverResampler(input_dim=input_dim, hidden_dim=config.hidden_dim,
                              output_dim=d_model, num_latents=config.num_latents,
                              num_layers=config.num_layers, num_heads=config.num_heads)


def _projection(config, d_model, input_dim):
    if d_model % config.num_heads:  # its attention runs at T5's width
        raise UserError(f"--num_heads {config.num_heads} does not divide the T5 width "
                        f"{d_model} that the projection bridge attends at", "command line",
                        "pick a divisor, e.g. 8")
    return ProjectionBridge(input_dim=input_dim, hidden_dim=config.hidden_dim,
                            output_dim=d_model, num_latents=config.num_latents,
                            num_heads=config.num_heads)


# The Perceiver reads token states by default: it learns more from them (docs/real_text.md). The projection baseline reads the pooled embedding, as the original guide had it.
register_bridge("perceiver", Bridge("Perceiver Resampler", _perceiver, default_input="tokens",
                                    no_decay=("latents",), attention_map=True))
register_bridge("projection", Bridge("Projection bridge", _projection, default_input="pooled",
                                     no_decay=("latents",), fixed_layers=1))
