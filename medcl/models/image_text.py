"""Dual-encoder image-text model (ConVIRT/CLIP): two towers projected into one normalised space."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from medcl.models.factory import build_component, register_architecture
from medcl.models.heads import ProjectionHead
from medcl.models.image_encoders import IMAGE_ENCODERS
from medcl.models.outputs import EncoderOutput
from medcl.models.text_encoders import TEXT_ENCODERS


class ImageTextModel(nn.Module):
    """Image tower + text tower + projection heads (+ optional multi-label disease heads).

    Args:
        image_encoder, text_encoder: modules returning :class:`EncoderOutput` and exposing ``out_dim``.
        embed_dim: shared embedding width.
        projection: ``"mlp"`` or ``"linear"``.
        num_labels: if > 0, a linear disease head on each tower's pooled features (CoGaze's disease-aware term).
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        embed_dim: int = 512,
        projection: str = "mlp",
        num_labels: int = 0,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_projection = ProjectionHead(image_encoder.out_dim, embed_dim, projection)
        self.text_projection = ProjectionHead(text_encoder.out_dim, embed_dim, projection)
        self.embed_dim = embed_dim
        self.image_labels = nn.Linear(image_encoder.out_dim, num_labels) if num_labels else None
        self.text_labels = nn.Linear(text_encoder.out_dim, num_labels) if num_labels else None

    def image_features(self, images: Tensor) -> EncoderOutput:
        return self.image_encoder(images)

    def text_features(self, texts: Sequence[str]) -> EncoderOutput:
        return self.text_encoder(texts)

    def encode_image(self, images: Tensor, normalize: bool = True) -> Tensor:
        """(B, C, H, W) -> (B, embed_dim)."""
        embedding = self.image_projection(self.image_features(images).pooled)
        return F.normalize(embedding, dim=-1) if normalize else embedding

    def encode_text(self, texts: Sequence[str], normalize: bool = True) -> Tensor:
        """list of B strings -> (B, embed_dim)."""
        embedding = self.text_projection(self.text_features(texts).pooled)
        return F.normalize(embedding, dim=-1) if normalize else embedding


@register_architecture("image_text")
def build_image_text(image: dict[str, Any], text: dict[str, Any], **kwargs: Any) -> ImageTextModel:
    """``{"architecture": "image_text", "image": {...}, "text": {...}, "embed_dim": ...}``."""
    return ImageTextModel(
        build_component(image, IMAGE_ENCODERS, "image encoder"),
        build_component(text, TEXT_ENCODERS, "text encoder"),
        **kwargs,
    )
