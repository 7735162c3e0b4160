"""What encoders return: token features for attention-level work, pooled features for contrast."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class EncoderOutput:
    """tokens: (B, N, C) patch/word features; pooled: (B, C); mask: (B, N) bool, True where a token is real."""

    tokens: Tensor
    pooled: Tensor
    mask: Tensor | None = None
