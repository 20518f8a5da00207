"""ProjectionBridge: the original guide's baseline bridge, kept so the comparison can be run.

Linear 1024 -> 768 -> d_model on the pooled embedding, repeated over 32 learnable latent
tokens that are added to it, then one self-attention layer over those tokens. Its latents are
called `latents`, as the Perceiver's are (files written before say `expanders`; they load).
"""
import torch
from torch import nn


class ProjectionBridge(nn.Module):
    def __init__(self, *, input_dim=1024, hidden_dim=768, output_dim=512, num_latents=32,
                 num_heads=8):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.GELU(),
                                     nn.Linear(hidden_dim, output_dim))
        self.latents = nn.Parameter(torch.randn(num_latents, output_dim) * 0.02)
        self.attention = nn.MultiheadAttention(output_dim, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(output_dim)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints and exports written before the rename name the latents `expanders`
        if prefix + "expanders" in state_dict:
            state_dict[prefix + "latents"] = state_dict.pop(prefix + "expanders")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, inputs, mask=None):
        """inputs (B, 1024) or (B, N, 1024) + mask (masked mean) -> (B, num_latents, d_model)."""
        if inputs.dim() == 3:
            if mask is None:
                mask = torch.ones(inputs.shape[:2], dtype=torch.bool, device=inputs.device)
            weights = mask.unsqueeze(-1).to(inputs.dtype)
            inputs = (inputs * weights).sum(1) / weights.sum(1).clamp(min=1)
        tokens = self.project(inputs).unsqueeze(1) + self.latents  # (B, L, d_model)
        attended, _ = self.attention(tokens, tokens, tokens, need_weights=False)
        return self.norm(tokens + attended)
