"""Projection and classification heads."""

from __future__ import annotations

from torch import Tensor, nn

from medcl.errors import ConfigError


class ProjectionHead(nn.Module):
    """Maps encoder features to the shared embedding space.

    ``kind="linear"`` (CLIP), ``"mlp"``: Linear(in, hidden) -> GELU -> Linear(hidden, out) (ConVIRT/CoGaze use
    a two-layer MLP; CoGaze's hidden is 2x the width), or ``"mlp-bn"``: Linear -> BatchNorm1d -> ReLU -> Linear,
    SimCLR's head (Chen et al. 2020). The batch norm matters for encoders whose pooled features barely vary between
    inputs, such as globally averaged instance-normed CNN maps (medcl's 3D U-Net encoders): at initialisation every
    pair of crops has cosine ~0.998 through the plain MLP and NT-Xent stays at chance; normalising over the batch
    restores the contrast.
    """

    def __init__(self, in_dim: int, out_dim: int, kind: str = "mlp", hidden_dim: int | None = None) -> None:
        super().__init__()
        if kind == "linear":
            self.net: nn.Module = nn.Linear(in_dim, out_dim)
        elif kind == "mlp":
            hidden_dim = hidden_dim or 2 * out_dim
            self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
        elif kind == "mlp-bn":
            hidden_dim = hidden_dim or 2 * out_dim
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim)
            )
        else:
            raise ConfigError(f"projection kind must be 'linear', 'mlp' or 'mlp-bn', got {kind!r}")

    def forward(self, features: Tensor) -> Tensor:
        return self.net(features)
