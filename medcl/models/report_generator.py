"""Radiology report generation: a (pretrained) image-text backbone as memory for a GPT-2 decoder with cross-attention.

The memory the decoder cross-attends to is (MLRG/CoGaze, cvt2distilgpt2):

* the image tokens of every view of the study and of the latest prior study (``images`` ``(B, V, C, H, W)`` with
  ``view_role`` 0 = current anchor, 1 = other current view, 2 = prior study), projected to the decoder width, plus a
  learned role embedding and a learned token-position embedding;
* optionally the context prompt (indication and latest prior report) encoded by the backbone's text tower, with the
  explicit absence tokens ``[NHI]`` (no indication) and ``[NHPR]`` (no prior report) when a part is missing.

The backbone is an :class:`~medcl.models.ImageTextModel` built by name; ``checkpoint`` loads the weights of a
contrastive pretraining run (``medcl fit -c configs/cxr/...``), which is what "fine-tuned from the contrastive
checkpoint" means. Its contrastive towers stay usable, so the task can add a CLIP loss next to captioning (CoCa).
The decoder is ``transformers.GPT2LMHeadModel`` with ``add_cross_attention=True``: ``distilgpt2`` in the real config
(its cross-attention layers are new), a small random GPT-2 with the offline byte-level BPE tokenizer in CPU configs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medcl.errors import ConfigError, InvalidInputError
from medcl.models.factory import create_model, register_architecture
from medcl.models.weights import load_matching_state_dict

log = logging.getLogger(__name__)
TOKENIZER_DIR = Path(__file__).parent / "tokenizers"
# Offline tokenizer name -> packaged directory (byte-level BPE trained on synthetic MIMIC-style reports).
OFFLINE_TOKENIZERS = {"cxr-bpe-synthetic": TOKENIZER_DIR / "cxr-bpe-synthetic"}
ROLES = {"current": 0, "other_view": 1, "prior": 2, "context": 3}
NO_INDICATION, NO_PRIOR_REPORT = "[NHI]", "[NHPR]"


def context_prompt(indication: str | None, prior_report: str | None, history: str | None = None) -> str:
    """MLRG's prompt with explicit absence tokens: ``[INDICATION] ... [HISTORY] ... [FINDINGS] <prior report>``."""
    indication = (indication or "").strip() or NO_INDICATION
    prior = (prior_report or "").strip() or NO_PRIOR_REPORT
    history = (history or "").strip()
    middle = f" [HISTORY] {history}" if history else ""
    return f"[INDICATION] {indication}{middle} [FINDINGS] {prior}"


def load_tokenizer(name_or_path: str) -> Any:
    """A GPT-2-style tokenizer with bos/eos/pad set: the offline BPE by name, a hub id or a local directory."""
    from transformers import AutoTokenizer

    source = OFFLINE_TOKENIZERS.get(name_or_path, name_or_path)
    if name_or_path in OFFLINE_TOKENIZERS and not Path(source).is_dir():
        raise ConfigError(f"offline tokenizer {name_or_path!r} missing at {source}; rebuild: "
                          "python -m medcl.models.report_generator --train-tokenizer")  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    if tokenizer.eos_token is None:
        raise ConfigError(f"tokenizer {name_or_path!r} has no end-of-sequence token")
    if tokenizer.bos_token is None:
        tokenizer.bos_token = tokenizer.eos_token
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 convention; padding is masked by attention, not id
    return tokenizer


def train_report_tokenizer(texts: Iterable[str], out_dir: str | Path, vocab_size: int = 1024) -> Path:
    """Train a cased byte-level BPE (GPT-2 style) on report texts and save it as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>")  # fmt: skip
    out_dir = Path(out_dir)
    fast.save_pretrained(str(out_dir))
    return out_dir


class ReportGenerator(nn.Module):
    """Backbone image (and context) tokens -> cross-attending GPT-2 -> report text.

    Args:
        backbone: model name of an image-text model (``create_model``), e.g. ``clip-cxr-demo``.
        backbone_overrides: merged into the backbone's JSON config.
        checkpoint: optional contrastive checkpoint (Lightning ``.ckpt`` with ``model.*`` keys, or a state dict).
        decoder: ``name_or_path`` (``distilgpt2``), ``pretrained``, ``tokenizer`` (default: the decoder's),
            ``config_overrides`` (e.g. ``{"n_layer": 2, "n_embd": 128}`` for a random CPU decoder).
        use_context: encode the indication / prior-report prompt into the memory.
        max_image_tokens: size of the learned token-position table (tokens per view).
    """

    def __init__(
        self,
        backbone: str = "clip-cxr-demo",
        backbone_overrides: dict[str, Any] | None = None,
        checkpoint: str | None = None,
        decoder: dict[str, Any] | None = None,
        use_context: bool = True,
        max_image_tokens: int = 1024,
    ) -> None:
        super().__init__()
        from transformers import AutoConfig, GPT2LMHeadModel

        self.backbone = create_model(backbone, **(backbone_overrides or {}))
        if not hasattr(self.backbone, "image_encoder"):
            raise ConfigError(f"backbone {backbone!r} has no image_encoder; use an image-text model")
        if checkpoint:
            self.load_backbone(checkpoint)
        spec = {"name_or_path": "distilgpt2", "pretrained": True, **(decoder or {})}
        self.tokenizer = load_tokenizer(spec.get("tokenizer") or spec["name_or_path"])
        overrides = {**spec.get("config_overrides", {}), "add_cross_attention": True}
        if spec["pretrained"]:
            self.decoder = GPT2LMHeadModel.from_pretrained(spec["name_or_path"], **overrides)
            self.pretrained_decoder = True
        else:
            config = AutoConfig.for_model("gpt2", **overrides) if spec["name_or_path"] == "gpt2-random" else \
                AutoConfig.from_pretrained(spec["name_or_path"], **overrides)  # fmt: skip
            config.vocab_size = len(self.tokenizer)
            config.bos_token_id = config.eos_token_id = self.tokenizer.eos_token_id
            config.pad_token_id = self.tokenizer.pad_token_id
            self.decoder = GPT2LMHeadModel(config)
            self.pretrained_decoder = False
        if len(self.tokenizer) > self.decoder.config.vocab_size:
            self.decoder.resize_token_embeddings(len(self.tokenizer))
        width = self.decoder.config.n_embd
        image_dim = self.backbone.image_encoder.out_dim
        self.image_projection = nn.Sequential(nn.Linear(image_dim, width), nn.LayerNorm(width))
        self.image_positions = nn.Embedding(max_image_tokens, width)
        self.roles = nn.Embedding(len(ROLES), width)
        self.use_context = use_context
        if use_context:
            text_dim = self.backbone.text_encoder.out_dim
            self.context_projection = nn.Sequential(nn.Linear(text_dim, width), nn.LayerNorm(width))
        self.pretrained_checkpoint = bool(checkpoint)

    # -- weights ----------------------------------------------------------------------------------------------
    def load_backbone(self, checkpoint: str) -> None:
        path = Path(checkpoint)
        if not path.is_file():
            raise InvalidInputError(path, "contrastive checkpoint not found")
        state = torch.load(path, map_location="cpu", weights_only=False)
        state = state.get("state_dict", state)
        state = {k.removeprefix("model."): v for k, v in state.items() if not k.startswith("loss.")}
        report = load_matching_state_dict(self.backbone, state, source=str(path))
        log.info("backbone from %s: %s", path, report.summary())

    def pretrained_prefixes(self, owner: str = "") -> list[str]:
        """Parameter-name prefixes of pretrained weights (for a lower learning rate); the rest is new."""
        # Without a contrastive checkpoint only the backbone's text tower (a pretrained language model) is pretrained.
        prefixes = [f"{owner}backbone" if self.pretrained_checkpoint else f"{owner}backbone.text_encoder"]
        if self.pretrained_decoder:
            base = f"{owner}decoder.transformer."
            prefixes += [f"{base}wte", f"{base}wpe", f"{base}ln_f"]
            for i in range(self.decoder.config.n_layer):
                prefixes += [f"{base}h.{i}.{part}" for part in ("ln_1", "attn", "ln_2", "mlp")]
        return prefixes

    # -- memory -----------------------------------------------------------------------------------------------
    def image_memory(self, images: Tensor, view_mask: Tensor | None = None, view_role: Tensor | None = None
                     ) -> tuple[Tensor, Tensor]:  # fmt: skip
        """(B, C, H, W) or (B, V, C, H, W) -> memory (B, V*N, width) and its mask (B, V*N) bool."""
        if images.ndim == 4:
            images = images.unsqueeze(1)
        batch, views = images.shape[:2]
        if view_mask is None:
            view_mask = torch.ones(batch, views, dtype=torch.bool, device=images.device)
        if view_role is None:
            view_role = torch.zeros(batch, views, dtype=torch.long, device=images.device)
            view_role[:, 1:] = ROLES["other_view"]
        tokens = self.backbone.image_encoder(images.flatten(0, 1)).tokens  # (B*V, N, C)
        n_tokens = tokens.shape[1]
        if n_tokens > self.image_positions.num_embeddings:
            raise ConfigError(
                f"{n_tokens} image tokens per view > max_image_tokens {self.image_positions.num_embeddings}"
            )
        memory = self.image_projection(tokens) + self.image_positions.weight[:n_tokens]
        memory = memory.view(batch, views, n_tokens, -1) + self.roles(view_role).unsqueeze(2)
        mask = view_mask.bool().unsqueeze(2).expand(batch, views, n_tokens)
        return memory.flatten(1, 2), mask.flatten(1, 2)

    def memory(self, images: Tensor, contexts: Sequence[str] | None = None, view_mask: Tensor | None = None,
               view_role: Tensor | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
        memory, mask = self.image_memory(images, view_mask, view_role)
        if self.use_context and contexts is not None:
            encoded = self.backbone.text_encoder(list(contexts))
            context = self.context_projection(encoded.tokens) + self.roles.weight[ROLES["context"]]
            context_mask = encoded.mask if encoded.mask is not None else torch.ones(context.shape[:2], dtype=torch.bool)
            memory = torch.cat([memory, context], dim=1)
            mask = torch.cat([mask, context_mask.to(mask.device)], dim=1)
        return memory, mask

    # -- training and generation ------------------------------------------------------------------------------
    def tokenize_targets(self, reports: Sequence[str], max_length: int) -> dict[str, Tensor]:
        """``<bos> report <eos>`` ids, attention mask and labels (-100 on padding)."""
        tok = self.tokenizer
        ids = [[tok.bos_token_id, *tok.encode(r, add_special_tokens=False)[: max_length - 2], tok.eos_token_id]
               for r in reports]  # fmt: skip
        longest = max(len(i) for i in ids)
        device = self.roles.weight.device
        input_ids = torch.full((len(ids), longest), tok.pad_token_id, dtype=torch.long, device=device)
        attention = torch.zeros((len(ids), longest), dtype=torch.long, device=device)
        for row, sequence in enumerate(ids):
            input_ids[row, : len(sequence)] = torch.tensor(sequence, device=device)
            attention[row, : len(sequence)] = 1
        labels = input_ids.masked_fill(attention == 0, -100)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}

    def forward(
        self,
        images: Tensor,
        reports: Sequence[str],
        contexts: Sequence[str] | None = None,
        view_mask: Tensor | None = None,
        view_role: Tensor | None = None,
        max_length: int = 128,
    ) -> Tensor:
        """Teacher-forced captioning loss (mean token cross-entropy)."""
        memory, mask = self.memory(images, contexts, view_mask, view_role)
        targets = self.tokenize_targets(reports, max_length)
        return self.decoder(**targets, encoder_hidden_states=memory, encoder_attention_mask=mask.long()).loss

    @torch.no_grad()
    def generate(
        self,
        images: Tensor,
        contexts: Sequence[str] | None = None,
        view_mask: Tensor | None = None,
        view_role: Tensor | None = None,
        num_beams: int = 3,
        max_new_tokens: int = 100,
        min_new_tokens: int = 0,
        length_penalty: float = 1.0,
        no_repeat_ngram_size: int = 0,
        use_cache: bool = True,
    ) -> list[str]:
        """Beam search (``num_beams=1``: greedy) from ``<bos>``; returns the decoded reports."""
        memory, mask = self.memory(images, contexts, view_mask, view_role)
        tok = self.tokenizer
        start = torch.full((memory.shape[0], 1), tok.bos_token_id, dtype=torch.long, device=memory.device)
        output = self.decoder.generate(
            input_ids=start,
            attention_mask=torch.ones_like(start),
            encoder_hidden_states=memory,
            encoder_attention_mask=mask.long(),
            num_beams=num_beams,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            length_penalty=length_penalty,
            no_repeat_ngram_size=no_repeat_ngram_size,
            use_cache=use_cache,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        return [t.strip() for t in tok.batch_decode(output[:, 1:], skip_special_tokens=True)]


@register_architecture("report_generator")
def build_report_generator(**kwargs: Any) -> nn.Module:
    return ReportGenerator(**kwargs)


def _train_packaged_tokenizer() -> Path:
    """Rebuild ``cxr-bpe-synthetic`` from synthetic MIMIC-style reports (no real report text is involved)."""
    import tempfile

    from medcl.data.reports import parse_report
    from medcl.data.synthetic.cxr import generate_mimic_cxr

    with tempfile.TemporaryDirectory() as tmp:
        generate_mimic_cxr(tmp, n_subjects=2000, seed=1234, image_size=16, jpg=False, workers=1)
        texts = []
        for path in sorted(Path(tmp, "files").glob("*/*/s*.txt")):
            sections = parse_report(path.read_text())
            texts += [sections[k] for k in ("findings", "impression", "indication") if sections.get(k)]
    return train_report_tokenizer(texts, OFFLINE_TOKENIZERS["cxr-bpe-synthetic"], vocab_size=1024)


if __name__ == "__main__":
    import sys

    if "--train-tokenizer" in sys.argv:
        print(_train_packaged_tokenizer())
