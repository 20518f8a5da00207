"""SonarT5: encoder -> bridge (sonar_t5/models/bridges.py: Perceiver Resampler, projection baseline)
-> T5 decoder."""
import json
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from .bridges import BRIDGES, build_bridge
from .encoders import encoder_from_config
from .t5_decoder import checkpoint_activations, t5_from_config
from .tokenizer import UNK_ID


@dataclass
class SonarT5Config:
    encoder: dict  # the encoder's config, with its kind: feature, identity or sonar_asl
    t5: dict  # the resolved T5Config as a dict: rebuilds the decoder with no download
    t5_model: str = "t5-small"
    bridge: str = "perceiver"  # a name in sonar_t5/models/bridges.py's registry
    resampler_input: str = None  # what the bridge reads, pooled or tokens: its default if None
    num_latents: int = 64
    num_layers: int = 2
    hidden_dim: int = 768
    num_heads: int = 8
    max_frames: int = 0  # 0 = keep every frame; else uniform subsampling (data side)
    normalize_features: bool = False
    contrastive_dim: int = 0  # width of the contrastive heads (--contrastive_weight); 0 = none

    def __post_init__(self):
        if self.resampler_input is None and self.bridge in BRIDGES:
            self.resampler_input = BRIDGES[self.bridge].default_input

    @classmethod
    def from_dict(cls, d):
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known.setdefault("resampler_input", "pooled")  # what checkpoints without it read
        return cls(**known)


class ContrastiveHeads(nn.Module):
    """A contrastive loss between each prefix and its own text vs the batch's other texts
    (InfoNCE both ways, as CLIP): the prefix must say which sentence it is, from the first
    steps, before the decoder has learned to read it. The text side is the mean of T5's
    input embeddings of the target tokens (cheap: no extra decoder pass)."""

    TEMPERATURE = 0.1

    def __init__(self, d_model, dim):
        super().__init__()
        self.prefix_head = nn.Linear(d_model, dim)
        self.text_head = nn.Linear(d_model, dim)

    def forward(self, prefix, token_embedding, labels):
        valid = (labels >= 0).unsqueeze(-1).to(prefix.dtype)
        text = (token_embedding(labels.clamp(min=0)) * valid).sum(1) / valid.sum(1).clamp(min=1)
        a = F.normalize(self.prefix_head(prefix.mean(1)).float(), dim=-1)
        b = F.normalize(self.text_head(text).float(), dim=-1)
        logits = a @ b.T / self.TEMPERATURE
        target = torch.arange(len(logits), device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class SonarT5(nn.Module):
    def __init__(self, config: SonarT5Config, t5=None, encoder=None):
        """t5 and encoder: modules already built (with their weights); else built from the
        config with random weights, for a checkpoint's weights to be loaded into."""
        super().__init__()
        self.config = config
        self.encoder = encoder if encoder is not None else encoder_from_config(config.encoder)
        self.t5 = t5 if t5 is not None else t5_from_config(config.t5)
        bridge_input = (self.encoder.token_dim if config.resampler_input == "tokens"
                        else self.encoder.config.output_dim)
        self.bridge = build_bridge(config, self.t5.config.d_model, bridge_input)
        self.contrastive = (ContrastiveHeads(self.t5.config.d_model, config.contrastive_dim)
                            if config.contrastive_dim else None)
        input_dim = self.encoder.config.input_dim
        # Per-dimension feature statistics from the training set; identity until set.
        self.register_buffer("feature_mean", torch.zeros(input_dim))
        self.register_buffer("feature_std", torch.ones(input_dim))
        self.encoder_frozen = False

    # -- the stages: features -> encoder states -> prefix -> text -------------------------
    def encode(self, features, mask):
        """features (B, T, D_in), mask (B, T) -> what the bridge reads: the pooled embedding
        (B, 1, 1024) with a one-position mask, or the token states (B, T, token_dim) with
        `mask`."""
        features = (features - self.feature_mean) / self.feature_std
        pooled, tokens = self.encoder(features, mask)
        if self.config.resampler_input == "tokens":
            return tokens, mask
        return pooled.unsqueeze(1), mask.new_ones(mask.shape[0], 1)

    def prefix(self, inputs, input_mask, encoded=False):
        """A batch's inputs -> the T5 prefix (B, num_latents, d_model). `inputs` are raw
        features, or (encoded=True) encoder states already computed (the frozen-encoder
        cache)."""
        states, states_mask = (inputs, input_mask) if encoded else self.encode(inputs, input_mask)
        return self.bridge(states, states_mask)

    def decoder_logits(self, prefix, decoder_input_ids, positions=None):
        """T5's decoder over the prefix, then its LM head: the logits (B, S, vocab) that
        T5ForConditionalGeneration's forward computes, or (positions, a (B, S) bool mask) only
        those of the positions the mask selects, (n, vocab). Training selects the positions
        with a label: the head is the widest matmul of a step (32,128 columns for t5-small,
        forward and both backward products) and padding needs none of it."""
        hidden = self.t5.decoder(input_ids=decoder_input_ids, encoder_hidden_states=prefix,
                                 use_cache=False)[0]
        if positions is not None:
            hidden = hidden[positions]
        config = self.t5.config  # T5 scales the tied head's input (transformers 5 renamed it)
        if getattr(config, "scale_decoder_outputs", config.tie_word_embeddings):
            hidden = hidden * config.d_model ** -0.5
        return self.t5.lm_head(hidden)

    def decoder_loss(self, prefix, labels, label_smoothing=0.0, word_dropout=0.0,
                     reduction="mean"):
        """Cross-entropy of labels (B, S; -100 = padding) given the prefix, the mean (or
        reduction="sum") over the labelled positions.

        word_dropout replaces decoder *input* tokens by unk with that probability (Bowman et
        al. 2016), so the decoder cannot lean on its own history alone. 0 changes nothing.
        """
        decoder_input_ids = self.t5._shift_right(labels)
        if word_dropout > 0 and self.training:
            drop = torch.rand(decoder_input_ids.shape, device=labels.device) < word_dropout
            drop[:, 0] = False  # keep the start token
            drop &= decoder_input_ids != self.t5.config.pad_token_id
            decoder_input_ids = decoder_input_ids.masked_fill(drop, UNK_ID)
        labelled = labels != -100
        logits = self.decoder_logits(prefix, decoder_input_ids, positions=labelled)
        return F.cross_entropy(logits.float(), labels[labelled],
                               label_smoothing=label_smoothing, reduction=reduction)

    # -- the two entries: a training loss, and generation -----------------------------------
    def forward(self, inputs, input_mask, labels, encoded=False, label_smoothing=0.0,
                word_dropout=0.0, contrastive_weight=0.0):
        """The training loss of a batch (see prefix() for the inputs): the decoder's
        cross-entropy, plus contrastive_weight x the contrastive loss when the model has
        the heads (--contrastive_weight)."""
        prefix = self.prefix(inputs, input_mask, encoded)
        loss = self.decoder_loss(prefix, labels, label_smoothing, word_dropout)
        if contrastive_weight and self.contrastive is not None:
            loss = loss + contrastive_weight * self.contrastive(prefix, self.t5.shared, labels)
        return loss

    @torch.no_grad()
    def generate(self, prefix, **generation_kwargs):
        """HF generate() on the prefix. A fresh BaseModelOutput per call: beam search
        expands it in place. Never synced_gpus (which generate() turns on by itself for a
        model with FSDP units under torchrun, keeping every process generating until all are
        done): a sharded model generates with its weights gathered whole, so each process
        stops at its own batch's end."""
        return self.t5.generate(encoder_outputs=BaseModelOutput(last_hidden_state=prefix),
                                attention_mask=_all_valid(prefix), synced_gpus=False,
                                **generation_kwargs)

    # -- bookkeeping ------------------------------------------------------------------------
    def gradient_checkpointing_enable(self):
        """Recompute T5 blocks' activations in the backward pass (the SONAR ASL encoder's
        stacks and the T5 decoder): memory for time, for unfrozen training of a large encoder."""
        if hasattr(self.encoder, "gradient_checkpointing_enable"):
            self.encoder.gradient_checkpointing_enable()
        checkpoint_activations(self.t5)
        return self

    def freeze_encoder(self):
        self.encoder_frozen = True
        self.encoder.requires_grad_(False)
        self.encoder.eval()
        return self

    def train(self, mode=True):
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()  # a frozen encoder never runs dropout
        return self

    def parameter_counts(self):
        count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
        # the parts' names: the modules', as the optimizer's groups and the logs have them
        counts = {"encoder": count(self.encoder), "bridge": count(self.bridge),
                  "t5": count(self.t5)}
        if self.contrastive is not None:
            counts["contrastive"] = count(self.contrastive)
        counts["total"] = sum(counts.values())
        counts["trainable"] = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return counts

    def config_dict(self):
        return json.loads(json.dumps(asdict(self.config)))


def _all_valid(prefix):
    """T5's attention mask over the prefix: every position is real (the bridge's latents)."""
    return torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
