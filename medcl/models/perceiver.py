"""Perceiver-style latent bottleneck (Jaegle et al. 2021), the core of CoGaze's context-infused vision encoder.

A fixed number of latent vectors cross-attend to a variable-length input (image patches or context tokens), then
self-attend, ``depth`` times. The caller supplies the initial latents, so one set of weights serves CoGaze's two
passes: context tokens -> context latents, then image patches read by those context latents.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from medcl.errors import ConfigError


class Attention(nn.Module):
    """Multi-head attention of queries ``x`` over ``context`` with an optional key padding mask.

    Uses ``F.scaled_dot_product_attention`` (fused kernels on GPU); with ``return_attention`` the head-averaged
    attention probabilities are computed explicitly as well (evaluation and plots only).
    """

    def __init__(self, query_dim: int, context_dim: int, heads: int, head_dim: int) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_kv = nn.Linear(context_dim, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, query_dim)

    def _split(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)  # (B, H, N, d)

    def forward(
        self, x: Tensor, context: Tensor, mask: Tensor | None = None, return_attention: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        q = self._split(self.to_q(x))
        k, v = (self._split(t) for t in self.to_kv(context).chunk(2, dim=-1))
        attn_mask = None if mask is None else mask[:, None, None, :].bool()
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        probabilities = None
        if return_attention:
            logits = (q @ k.transpose(-1, -2)) * self.head_dim**-0.5
            if attn_mask is not None:
                logits = logits.masked_fill(~attn_mask, float("-inf"))
            probabilities = logits.softmax(dim=-1).mean(dim=1)  # (B, Nq, Nk), averaged over heads
        return self.to_out(out.transpose(1, 2).flatten(2)), probabilities


class FeedForward(nn.Module):
    """Pre-norm GEGLU MLP (the Perceiver reference implementation's feed-forward)."""

    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 2 * mult * dim)
        self.down = nn.Linear(mult * dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.up(self.norm(x)).chunk(2, dim=-1)
        return self.down(value * F.gelu(gate))


class PerceiverBlock(nn.Module):
    """Cross-attention (latents <- inputs) + FF, then latent self-attention + FF, all pre-norm and residual."""

    def __init__(self, dim: int, input_dim: int, cross_heads: int, latent_heads: int, head_dim: int, ff_mult: int):
        super().__init__()
        self.cross_norm, self.input_norm = nn.LayerNorm(dim), nn.LayerNorm(input_dim)
        self.cross = Attention(dim, input_dim, cross_heads, head_dim)
        self.cross_ff = FeedForward(dim, ff_mult)
        self.self_norm = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, dim, latent_heads, head_dim)
        self.self_ff = FeedForward(dim, ff_mult)

    def forward(
        self, latents: Tensor, inputs: Tensor, mask: Tensor | None, return_attention: bool
    ) -> tuple[Tensor, Tensor | None]:
        update, attention = self.cross(self.cross_norm(latents), self.input_norm(inputs), mask, return_attention)
        latents = latents + update
        latents = latents + self.cross_ff(latents)
        normed = self.self_norm(latents)
        latents = latents + self.self_attn(normed, normed)[0]
        return latents + self.self_ff(latents), attention


class LatentPerceiver(nn.Module):
    """``depth`` Perceiver blocks mapping (latents (B, L, dim), inputs (B, N, input_dim)) to latents (B, L, dim).

    Args:
        dim: latent width (CoGaze: 768).
        depth: number of cross+self blocks (CoGaze: 3; weights are not tied across blocks).
        input_dim: width of the inputs (default ``dim``).
        cross_heads, latent_heads, head_dim: attention shapes (CoGaze: 8, 8, 64).
        ff_mult: feed-forward expansion.
    """

    def __init__(
        self,
        dim: int,
        depth: int = 3,
        input_dim: int | None = None,
        cross_heads: int = 8,
        latent_heads: int = 8,
        head_dim: int = 64,
        ff_mult: int = 4,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ConfigError(f"LatentPerceiver depth must be >= 1, got {depth}")
        self.blocks = nn.ModuleList(
            PerceiverBlock(dim, input_dim or dim, cross_heads, latent_heads, head_dim, ff_mult) for _ in range(depth)
        )

    def forward(
        self, latents: Tensor, inputs: Tensor, mask: Tensor | None = None, return_attention: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Returns the final latents and, with ``return_attention``, the last block's cross-attention (B, L, N)."""
        if latents.shape[0] != inputs.shape[0]:
            raise ValueError(f"latents {tuple(latents.shape)} and inputs {tuple(inputs.shape)} differ in batch size")
        attention = None
        for block in self.blocks:
            latents, attention = block(latents, inputs, mask, return_attention)
        return latents, attention
