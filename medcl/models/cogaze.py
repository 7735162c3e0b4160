"""CoGaze: context-infused vision encoder + text encoder in one shared space, with disease heads.

Data flow (released CoGaze code, see docs/cogaze.md):

* image encoder tokens (B, P, C_img) + a learnable view-position embedding -> RMSNorm -> MLP projector -> patches
  (B, P, D). Gaze guidance compares sentences with these patches.
* clinical context (indication + history, ``"[INDICATION] ... [HISTORY] ..."``) -> the same text encoder and text
  projector -> tokens (B, T, D); a Perceiver turns (shared latents + "context" type embedding) into context latents.
* visual latents = Perceiver(patches, initial latents = context latents when the item has context, else shared
  latents + "image" type embedding). The same Perceiver weights serve both passes.
* image embedding = mean of visual latents; text embedding = masked mean of projected report tokens; disease heads are
  linear layers on those two means.

``use_context=False`` gives the no-context path for every item (the ConVIRT baseline and the "no-context" ablation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medcl.data.text.views import VIEW_POSITIONS
from medcl.models.factory import build_component, register_architecture
from medcl.models.heads import ProjectionHead
from medcl.models.perceiver import LatentPerceiver


@dataclass
class CoGazeOutput:
    """What one forward pass produces; embeddings are unnormalised (the losses normalise)."""

    image_embedding: Tensor  # (B, D) mean of visual latents
    patches: Tensor  # (B, P, D) projected image tokens (gaze guidance compares sentences with these)
    latents: Tensor  # (B, L, D) visual latents
    image_logits: Tensor | None  # (B, num_labels)
    text_embedding: Tensor | None = None  # (B, D)
    text_logits: Tensor | None = None  # (B, num_labels)
    cross_attention: Tensor | None = None  # (B, L, P) last Perceiver block, head-averaged (return_attention only)


class VisionProjector(nn.Module):
    """View-position embedding + RMSNorm + two-layer MLP (CoGaze's vision projector)."""

    def __init__(self, in_dim: int, out_dim: int, num_views: int = len(VIEW_POSITIONS) + 1) -> None:
        super().__init__()
        self.view_embedding = nn.Embedding(num_views, in_dim)
        nn.init.normal_(self.view_embedding.weight, std=0.02)
        self.norm = nn.RMSNorm(in_dim)
        self.mlp = ProjectionHead(in_dim, out_dim, "mlp", hidden_dim=2 * out_dim)

    def forward(self, tokens: Tensor, views: Tensor | None = None) -> Tensor:
        if views is None:
            views = torch.full((tokens.shape[0],), len(VIEW_POSITIONS), dtype=torch.long, device=tokens.device)
        return self.mlp(self.norm(tokens + self.view_embedding(views)[:, None, :]))


class CoGazeModel(nn.Module):
    """Context- and gaze-guided CXR vision-language model (see the module docstring).

    Args:
        image_encoder, text_encoder: modules returning :class:`~medcl.models.EncoderOutput` with ``out_dim``.
        embed_dim: shared width D (CoGaze: 768).
        num_latents: Perceiver latents L (CoGaze: 128).
        perceiver_depth, cross_heads, latent_heads, head_dim: Perceiver shape (CoGaze: 3, 8, 8, 64).
        num_labels: disease classes for the two heads (14 CheXpert observations; 0 disables them).
        use_context: infuse indication/history into the visual latents when an item has them.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        embed_dim: int = 768,
        num_latents: int = 128,
        perceiver_depth: int = 3,
        cross_heads: int = 8,
        latent_heads: int = 8,
        head_dim: int = 64,
        num_labels: int = 14,
        use_context: bool = True,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.embed_dim = embed_dim
        self.use_context = use_context
        self.image_projection = VisionProjector(image_encoder.out_dim, embed_dim)
        self.text_projection = ProjectionHead(text_encoder.out_dim, embed_dim, "mlp", hidden_dim=2 * embed_dim)
        self.perceiver = LatentPerceiver(embed_dim, perceiver_depth, None, cross_heads, latent_heads, head_dim)
        self.shared_latents = nn.Parameter(torch.randn(num_latents, embed_dim) * 0.02)
        self.context_type = nn.Parameter(torch.randn(embed_dim) * 0.02)
        self.image_type = nn.Parameter(torch.randn(embed_dim) * 0.02)
        self.image_labels = nn.Linear(embed_dim, num_labels) if num_labels else None
        self.text_labels = nn.Linear(embed_dim, num_labels) if num_labels else None

    # -- towers -----------------------------------------------------------------------------------------------
    def patch_features(self, images: Tensor, views: Tensor | None = None) -> Tensor:
        """(B, C, H, W) -> projected patches (B, P, D), row-major over the encoder's token grid."""
        return self.image_projection(self.image_encoder(images).tokens, views)

    def text_tokens(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """list of B strings -> projected tokens (B, T, D) and their mask (B, T) (True = real token)."""
        output = self.text_encoder(list(texts))
        mask = output.mask if output.mask is not None else torch.ones(output.tokens.shape[:2], dtype=torch.bool)
        return self.text_projection(output.tokens), mask.to(output.tokens.device)

    @staticmethod
    def pool_tokens(tokens: Tensor, mask: Tensor) -> Tensor:
        weights = mask.unsqueeze(-1).to(tokens.dtype)
        return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)

    def initial_latents(self, contexts: Sequence[str] | None, has_context: Tensor | None, batch: int) -> Tensor:
        """Context latents for items with context (when ``use_context``), shared image latents for the rest."""
        device = self.shared_latents.device
        latents = (self.shared_latents + self.image_type).expand(batch, -1, -1)
        if not self.use_context or contexts is None:
            return latents
        flags = torch.ones(batch, dtype=torch.bool) if has_context is None else has_context.bool().cpu()
        index = flags.nonzero().flatten().tolist()
        if not index:
            return latents
        tokens, mask = self.text_tokens([contexts[i] for i in index])
        seed = (self.shared_latents + self.context_type).expand(len(index), -1, -1)
        context_latents, _ = self.perceiver(seed, tokens, mask)
        latents = latents.clone()
        latents[torch.tensor(index, device=device)] = context_latents.to(latents.dtype)
        return latents

    def visual_latents(
        self,
        patches: Tensor,
        contexts: Sequence[str] | None = None,
        has_context: Tensor | None = None,
        return_attention: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        latents = self.initial_latents(contexts, has_context, patches.shape[0])
        return self.perceiver(latents, patches, None, return_attention)

    # -- the ImageTextModel interface (zero-shot, retrieval, probes) ----------------------------------------------
    def encode_image(
        self,
        images: Tensor,
        normalize: bool = True,
        contexts: Sequence[str] | None = None,
        has_context: Tensor | None = None,
        views: Tensor | None = None,
    ) -> Tensor:
        """(B, C, H, W) -> (B, D): mean of the visual latents (context-infused when contexts are given)."""
        latents, _ = self.visual_latents(self.patch_features(images, views), contexts, has_context)
        embedding = latents.mean(dim=1)
        return F.normalize(embedding, dim=-1) if normalize else embedding

    def encode_text(self, texts: Sequence[str], normalize: bool = True) -> Tensor:
        """list of B strings -> (B, D): masked mean of the projected tokens."""
        embedding = self.pool_tokens(*self.text_tokens(texts))
        return F.normalize(embedding, dim=-1) if normalize else embedding

    def forward(
        self,
        images: Tensor,
        texts: Sequence[str] | None = None,
        contexts: Sequence[str] | None = None,
        has_context: Tensor | None = None,
        views: Tensor | None = None,
        return_attention: bool = False,
    ) -> CoGazeOutput:
        patches = self.patch_features(images, views)
        latents, attention = self.visual_latents(patches, contexts, has_context, return_attention)
        image_embedding = latents.mean(dim=1)
        output = CoGazeOutput(
            image_embedding=image_embedding,
            patches=patches,
            latents=latents,
            image_logits=self.image_labels(image_embedding) if self.image_labels is not None else None,
            cross_attention=attention,
        )
        if texts is not None:
            output.text_embedding = self.encode_text(texts, normalize=False)
            output.text_logits = self.text_labels(output.text_embedding) if self.text_labels is not None else None
        return output


@register_architecture("cogaze")
def build_cogaze(image: dict[str, Any], text: dict[str, Any], **kwargs: Any) -> CoGazeModel:
    from medcl.models.image_encoders import IMAGE_ENCODERS
    from medcl.models.text_encoders import TEXT_ENCODERS

    return CoGazeModel(
        build_component(image, IMAGE_ENCODERS, "image encoder"),
        build_component(text, TEXT_ENCODERS, "text encoder"),
        **kwargs,
    )
