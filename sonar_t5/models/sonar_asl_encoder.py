"""ssvp_slt's SONAR ASL encoder (SignT5SonarEncoder), built from transformers' own T5 modules.

facebookresearch/ssvp_slt trains a T5 encoder-decoder (t5-v1_1-large shaped: d_model 1024,
24 + 24 layers, 16 heads, d_ff 2816, gated-gelu) to map sign-language video features into
the SONAR sentence-embedding space:

    inputs_embeds = feature_proj_scale * Linear(feature_dim -> d_model)(features)
    tokens        = T5 encoder(inputs_embeds, mask)                       (B, T, d_model)
    pooled        = projection_out(T5 decoder(token 0, cross-attending to tokens))  (B, 1024)

Its checkpoints use transformers' T5 parameter names, so the architecture is read from the
tensor shapes (any T5 size loads) and the weights go into transformers' T5Stack, with no copy
of ssvp_slt's modelling code.
"""
import copy
import re
from dataclasses import dataclass

import torch
from torch import nn
from transformers import T5Config
from transformers.models.t5.modeling_t5 import T5Stack

from sonar_t5.common.errors import UserError

from .t5_decoder import checkpoint_activations

# The weights inside an ssvp_slt checkpoint: tried in this order, else the file is the dict.
WEIGHT_KEYS = ("student", "model", "model_state")
# Unused by T5 (cross-attention has no relative bias); old transformers versions saved it.
IGNORED_KEYS = ("decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",)
SIGNATURE_KEYS = ("projection_out.weight", "encoder.block.0.layer.0.SelfAttention.q.weight")


@dataclass
class SonarAslEncoderConfig:
    kind: str = "sonar_asl"
    input_dim: int = 768  # feature_dim: SignHiera features
    d_model: int = 1024
    d_kv: int = 64
    d_ff: int = 2816
    num_layers: int = 24
    num_decoder_layers: int = 24
    num_heads: int = 16
    relative_attention_num_buckets: int = 32
    gated: bool = True  # gated-gelu (T5 v1.1); else relu (the original T5)
    vocab_size: int = 32128
    output_dim: int = 1024

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def t5_config(self):
        return T5Config(
            vocab_size=self.vocab_size, d_model=self.d_model, d_kv=self.d_kv, d_ff=self.d_ff,
            num_layers=self.num_layers, num_decoder_layers=self.num_decoder_layers,
            num_heads=self.num_heads,
            relative_attention_num_buckets=self.relative_attention_num_buckets,
            feed_forward_proj="gated-gelu" if self.gated else "relu",
            dropout_rate=0.0,  # ssvp_slt builds the SONAR encoder without dropout
            decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, use_cache=False)


class FeatureProjection(nn.Module):
    """Linear(feature_dim -> d_model), scaled per channel by a learned vector."""

    def __init__(self, input_dim, d_model):
        super().__init__()
        self.feature_proj = nn.Linear(input_dim, d_model)
        self.feature_proj_scale = nn.Parameter(torch.ones(d_model))

    def forward(self, features):
        return self.feature_proj_scale * self.feature_proj(features)


def _stack(t5_config, is_decoder, shared):
    config = copy.deepcopy(t5_config)
    config.is_decoder, config.is_encoder_decoder, config.use_cache = is_decoder, False, False
    if is_decoder:
        config.num_layers = t5_config.num_decoder_layers
    stack = T5Stack(config)
    stack.set_input_embeddings(shared)  # one embedding table, as in ssvp_slt (tied)
    return stack


class SonarAslEncoder(nn.Module):
    """features (B, T, input_dim), mask (B, T) -> pooled (B, 1024), tokens (B, T, d_model)."""

    def __init__(self, config: SonarAslEncoderConfig):
        super().__init__()
        self.config = config
        t5_config = config.t5_config()
        self.feature_projection = FeatureProjection(config.input_dim, config.d_model)
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = _stack(t5_config, is_decoder=False, shared=self.shared)
        self.decoder = _stack(t5_config, is_decoder=True, shared=self.shared)
        self.projection_out = nn.Linear(config.d_model, config.output_dim, bias=False)

    @property
    def token_dim(self):
        return self.config.d_model

    def forward(self, features, mask):
        mask = mask.long()
        tokens = self.encoder(inputs_embeds=self.feature_projection(features),
                              attention_mask=mask).last_hidden_state
        start = torch.zeros(features.shape[0], 1, dtype=torch.long, device=features.device)
        pooled = self.decoder(input_ids=start, encoder_hidden_states=tokens,
                              encoder_attention_mask=mask).last_hidden_state
        return self.projection_out(pooled).squeeze(1), tokens

    def gradient_checkpointing_enable(self):
        """Recompute each T5 block's activations in the backward pass (the stacks' own
        gradient checkpointing): less memory for unfrozen training, about a third more time."""
        for stack in (self.encoder, self.decoder):
            checkpoint_activations(stack)


# -- reading ssvp_slt's checkpoint files ----------------------------------------------------
def is_ssvp_state_dict(state_dict):
    return all(k in state_dict for k in SIGNATURE_KEYS)


def unwrap_weights(ckpt):
    """The state dict inside an ssvp_slt file: under student, model or model_state, or bare."""
    for key in WEIGHT_KEYS:
        if isinstance(ckpt.get(key), dict):
            return ckpt[key]
    return ckpt


def ssvp_state_dict(state_dict):
    """ssvp_slt's key names -> this module's: the feature projection sits at the top here
    (ssvp_slt: inside the encoder stack; old files: encoder.feature_proj.*), every floating
    tensor as float32, and the tied embedding copies filled in from whichever is present."""
    out = {}
    for key, value in state_dict.items():
        if key in IGNORED_KEYS or not isinstance(value, torch.Tensor):
            continue
        key = re.sub(r"^encoder\.(feature_projection\.)?feature_proj", "feature_projection."
                     "feature_proj", key)
        out[key] = value.float() if value.is_floating_point() else value
    tied = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
    present = next((out[k] for k in tied if k in out), None)
    if present is not None:
        for key in tied:
            out.setdefault(key, present)
    return out


def config_from_state_dict(state_dict, path):
    """The architecture, read from tensor shapes."""
    def shape(key):
        if key not in state_dict:
            raise UserError(f"SONAR ASL encoder checkpoint has no '{key}'", str(path),
                            "pass the encoder checkpoint ssvp_slt saved, unmodified")
        return tuple(state_dict[key].shape)

    def count(prefix):
        return len({m.group(1) for k in state_dict
                    if (m := re.match(rf"{prefix}\.block\.(\d+)\.", k))})

    buckets, heads = shape("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight")
    gated = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in state_dict
    d_ff = shape("encoder.block.0.layer.1.DenseReluDense." + ("wi_0" if gated else "wi")
                 + ".weight")[0]
    vocab_size, d_model = shape("shared.weight")
    return SonarAslEncoderConfig(
        input_dim=shape("feature_projection.feature_proj.weight")[1], d_model=d_model,
        d_kv=shape("encoder.block.0.layer.0.SelfAttention.q.weight")[0] // heads, d_ff=d_ff,
        num_layers=count("encoder"), num_decoder_layers=count("decoder"), num_heads=heads,
        relative_attention_num_buckets=buckets, gated=gated, vocab_size=vocab_size,
        output_dim=shape("projection_out.weight")[0])
