"""Flamingo-style Perceiver Resampler: N input vectors -> a fixed number of latent tokens.

Alayrac et al. 2022, https://arxiv.org/abs/2204.14198; after lucidrains/flamingo-pytorch.
Keys and values come from concat(norm(inputs), norm(latents)): with one pooled SONAR vector as
the only key, softmax over a single key would be exactly 1 and every latent would receive the
same vector. With the latents among the keys, each latent attends differently.
"""
import torch
import torch.nn.functional as F
from torch import nn


def feed_forward(dim, hidden_dim):
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden_dim), nn.GELU(),
                         nn.Linear(hidden_dim, dim))


class PerceiverAttention(nn.Module):
    def __init__(self, *, dim, heads=8, dim_head=64):
        super().__init__()
        self.heads, self.scale = heads, dim_head ** -0.5
        inner = heads * dim_head
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x, latents, mask, return_attention=False):
        """x (B, N, dim), latents (B, L, dim), mask (B, N) True = valid -> (B, L, dim), and
        the attention (B, h, L, N + L) with return_attention (else None)."""
        x, latents = self.norm_media(x), self.norm_latents(latents)
        b, l, h = x.shape[0], latents.shape[1], self.heads
        q = self.to_q(latents)  # (B, L, h * dim_head): queries from the latents only
        k, v = self.to_kv(torch.cat([x, latents], dim=1)).chunk(2, dim=-1)  # (B, N + L, h * d)
        q, k, v = (t.reshape(b, t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
        # q (B, h, L, dim_head); k, v (B, h, N + L, dim_head)
        key_mask = torch.cat([mask, mask.new_ones(b, l)], dim=1)  # latents are always valid
        if return_attention:  # the weights themselves, for the attention plots
            scores = (q * self.scale) @ k.transpose(-1, -2)  # (B, h, L, N + L)
            scores = scores.masked_fill(~key_mask[:, None, None, :],
                                        torch.finfo(scores.dtype).min)
            attn = scores.softmax(dim=-1)
            out = attn @ v
        else:  # PyTorch's fused kernel: the same result without the (L, N + L) matrices
            attn = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :],
                                                 scale=self.scale)
        return self.to_out(out.transpose(1, 2).reshape(b, l, -1)), attn


class PerceiverResampler(nn.Module):
    """The original guide's configuration as defaults: 1024 -> 768, 64 latents, 8 heads, 2 layers, MLP x2."""

    def __init__(self, *, input_dim=1024, hidden_dim=768, output_dim=512, num_latents=64,
                 num_layers=2, num_heads=8, dim_head=64, ff_mult=2):
        super().__init__()
        self.input_proj = nn.Linear(input_dim, hidden_dim)
        self.latents = nn.Parameter(torch.randn(num_latents, hidden_dim) * 0.02)
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim=hidden_dim, heads=num_heads, dim_head=dim_head),
                           feed_forward(hidden_dim, hidden_dim * ff_mult)])
            for _ in range(num_layers))
        self.norm = nn.LayerNorm(hidden_dim)  # T5's own encoder output is layer-normed too
        self.output_proj = nn.Linear(hidden_dim, output_dim)

    def forward(self, inputs, mask=None, return_attention=False):
        """inputs (B, 1024) or (B, N, 1024), mask (B, N) -> prefix (B, num_latents, output_dim)."""
        if inputs.dim() == 2:
            inputs = inputs.unsqueeze(1)
        if mask is None:
            mask = torch.ones(inputs.shape[:2], dtype=torch.bool, device=inputs.device)
        x = self.input_proj(inputs)
        latents = self.latents.unsqueeze(0).expand(x.shape[0], -1, -1)
        attentions = []
        for attend, ff in self.layers:
            update, attn = attend(x, latents, mask, return_attention)
            latents = latents + update
            latents = latents + ff(latents)
            attentions.append(attn)
        prefix = self.output_proj(self.norm(latents))
        return (prefix, attentions) if return_attention else prefix
