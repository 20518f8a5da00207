"""FeatureEncoder: this project's own encoder, trained from scratch for when no SONAR encoder
exists. Feature sequence (B, T, D_in) -> a 1024-d sentence embedding + token states.

Linear(D_in -> d) + sinusoidal positions + pre-norm Transformer encoder + attention pooling,
then Linear(d -> 1024) on both the pooled vector and every token state. In identity mode
(features that already are 1024-d SONAR embeddings) it has no parameters and passes them on.
ssvp_slt's SONAR ASL encoder, the encoder users bring, is sonar_t5/models/sonar_asl_encoder.py.
"""
import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from sonar_t5.common.checkpoint_io import save_checkpoint
from sonar_t5.common.errors import UserError

SONAR_DIM = 1024


@dataclass
class FeatureEncoderConfig:
    kind: str = "feature"  # or "identity": features already are SONAR embeddings
    input_dim: int = 768
    d_model: int = 512
    num_layers: int = 4
    num_heads: int = 8
    ffn_dim: int = 2048
    dropout: float = 0.1
    output_dim: int = SONAR_DIM

    @property
    def is_identity(self):
        return self.kind == "identity"

    @classmethod
    def from_dict(cls, d):
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if d.get("identity"):  # configs written before `kind` said it alone
            known["kind"] = "identity"
        return cls(**known)


def sinusoidal_positions(length, dim, device):
    """The Transformer's fixed positions: any length, nothing to learn or to outgrow."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32)
                     * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(position * freq)
    pe[:, 1::2] = torch.cos(position * freq)
    return pe


class AttentionPooling(nn.Module):
    """One learned query attends over the valid frames: a weighted mean, not a plain one."""

    def __init__(self, dim):
        super().__init__()
        self.score = nn.Linear(dim, 1)

    def forward(self, x, mask):  # x (B, T, d), mask (B, T) True = valid
        scores = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=-1)  # (B, T)
        return torch.einsum("bt,btd->bd", weights, x)


class FeatureEncoder(nn.Module):
    def __init__(self, config: FeatureEncoderConfig):
        super().__init__()
        self.config = config
        if config.is_identity:
            if config.input_dim != config.output_dim:
                raise UserError(f"identity encoder needs {config.output_dim}-d features, "
                                f"got {config.input_dim}-d")
            return
        self.input_proj = nn.Linear(config.input_dim, config.d_model)
        layer = nn.TransformerEncoderLayer(
            config.d_model, config.num_heads, config.ffn_dim, config.dropout,
            activation="gelu", batch_first=True, norm_first=True)
        # enable_nested_tensor is off: it only helps post-norm layers and warns otherwise.
        self.layers = nn.TransformerEncoder(layer, config.num_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(config.d_model)
        self.pool = AttentionPooling(config.d_model)
        self.output_proj = nn.Linear(config.d_model, config.output_dim)

    @property
    def token_dim(self):
        return self.config.input_dim if self.config.is_identity else self.config.output_dim

    def forward(self, features, mask):
        """features (B, T, D_in), mask (B, T) bool -> pooled (B, 1024), tokens (B, T, 1024)."""
        if self.config.is_identity:
            denom = mask.sum(1, keepdim=True).clamp(min=1).to(features.dtype)
            pooled = (features * mask.unsqueeze(-1)).sum(1) / denom
            return pooled, features
        x = self.input_proj(features)
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device).to(x.dtype)
        x = self.final_norm(self.layers(x, src_key_padding_mask=~mask))
        return self.output_proj(self.pool(x, mask)), self.output_proj(x)


FILE_KIND = "feature_encoder"  # an encoder file's kind is its config kind + "_encoder"


def save_feature_encoder(encoder, path):
    """A trained FeatureEncoder as a --sonar_checkpoint file: {'kind', 'config', 'state_dict'}."""
    save_checkpoint({"kind": FILE_KIND, "config": asdict(encoder.config),
                     "state_dict": encoder.state_dict()}, path)
