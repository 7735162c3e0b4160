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

``finding_prompt=True`` adds PromptMRG's diagnosis-driven prompt (Jin et al., AAAI 2024): a head on the pooled image
tokens classifies each of the 14 CheXpert observations as blank / positive / negative / uncertain, and the decoder
reads one learned embedding per (observation, state) as a 14-token prefix before ``<bos>``. The head is trained
with cross-entropy against the reference report's labels (the rule-based labeler of :mod:`medcl.eval`); the decoder
is trained on prompts built from those reference labels (teacher forcing, so it learns to put the prompt into words)
and generates from the head's predictions. Why: a small decoder trained briefly collapses to the most frequent normal
report (docs/report_generation.md); an explicit diagnosis in its self-attention prefix is what it cannot ignore.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from medcl.data.text.labeler import label_reports
from medcl.data.text.labels import CHEXBERT_CLASS_CODES, CHEXPERT_LABELS
from medcl.data.text.reports import ROLES
from medcl.errors import ConfigError, InvalidInputError
from medcl.models.factory import create_model, register_architecture
from medcl.models.hub import from_hub, is_local, random_init_config
from medcl.models.weights import load_matching_state_dict, read_state_dict

log = logging.getLogger(__name__)
TOKENIZER_DIR = Path(__file__).parent / "tokenizers"
# Offline tokenizer name -> packaged directory (byte-level BPE trained on synthetic MIMIC-style reports).
OFFLINE_TOKENIZERS = {"cxr-bpe-synthetic": TOKENIZER_DIR / "cxr-bpe-synthetic"}
# The generation hyperparameters and their defaults: what generate() takes. A task sets, and a served report model
# carries, all but use_cache (the decoder's key/value cache: a speed switch, the same reports either way).
GENERATION_DEFAULTS: dict[str, Any] = {
    "num_beams": 3, "max_new_tokens": 100, "min_new_tokens": 0, "length_penalty": 1.0, "no_repeat_ngram_size": 0,
    "use_cache": True,
}  # fmt: skip
GENERATION_SETTINGS = tuple(name for name in GENERATION_DEFAULTS if name != "use_cache")
# Prompt states per observation: CheXbert's classes, PromptMRG's [BLA] [POS] [NEG] [UNC] -> CheXpert codes.
FINDING_STATE_CODES = CHEXBERT_CLASS_CODES


def codes_to_states(codes: Tensor) -> Tensor:
    """CheXpert codes (1 positive, 0 negative, -1 uncertain, NaN blank) -> state indices of FINDING_STATE_CODES."""
    states = torch.zeros(codes.shape, dtype=torch.long, device=codes.device)  # NaN -> blank
    for state, code in enumerate(FINDING_STATE_CODES[1:], start=1):
        states[codes == code] = state
    return states


def states_to_codes(states: Tensor) -> Tensor:
    return torch.tensor(FINDING_STATE_CODES, device=states.device)[states]


def load_tokenizer(name_or_path: str) -> Any:
    """A GPT-2-style tokenizer with bos/eos/pad set: the offline BPE by name, a hub id or a local directory."""
    from transformers import AutoTokenizer

    source = OFFLINE_TOKENIZERS.get(name_or_path, name_or_path)
    if name_or_path in OFFLINE_TOKENIZERS and not Path(source).is_dir():
        raise ConfigError(f"offline tokenizer {name_or_path!r} missing at {source}; rebuild: "
                          "python scripts/train_report_tokenizer.py")  # fmt: skip
    tokenizer = from_hub("decoder tokenizer", AutoTokenizer.from_pretrained, str(source))
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
        finding_prompt: PromptMRG-style diagnosis prompt (see the module docstring).
        finding_loss_weight: weight of the finding head's cross-entropy next to the captioning loss.
    """

    def __init__(
        self,
        backbone: str = "clip-cxr-demo",
        backbone_overrides: dict[str, Any] | None = None,
        checkpoint: str | None = None,
        decoder: dict[str, Any] | None = None,
        use_context: bool = True,
        max_image_tokens: int = 1024,
        finding_prompt: bool = False,
        finding_loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        from transformers import GPT2LMHeadModel

        self.backbone = create_model(backbone, **(backbone_overrides or {}))
        if not hasattr(self.backbone, "image_encoder"):
            raise ConfigError(f"backbone {backbone!r} has no image_encoder; use an image-text model")
        if checkpoint:
            self.load_backbone(checkpoint)
        spec = {"name_or_path": "distilgpt2", "pretrained": True, **(decoder or {})}
        tokenizer = spec.get("tokenizer") or spec["name_or_path"]
        if not spec["pretrained"] and tokenizer not in OFFLINE_TOKENIZERS and not is_local(tokenizer, load_tokenizer):
            log.info("decoder tokenizer %r is not local: random decoder with the offline cxr-bpe-synthetic", tokenizer)
            tokenizer = "cxr-bpe-synthetic"
        self.tokenizer = load_tokenizer(tokenizer)
        overrides = {**spec.get("config_overrides", {}), "add_cross_attention": True}
        if spec["pretrained"]:
            self.decoder = from_hub("decoder", GPT2LMHeadModel.from_pretrained, spec["name_or_path"], **overrides)
            self.pretrained_decoder = True
        else:
            config = random_init_config("decoder", spec["name_or_path"], "gpt2", **overrides)
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
        self.finding_prompt = finding_prompt
        self.finding_loss_weight = finding_loss_weight
        if finding_prompt:
            self.n_findings, n_states = len(CHEXPERT_LABELS), len(FINDING_STATE_CODES)
            self.finding_head = nn.Sequential(nn.LayerNorm(image_dim), nn.Linear(image_dim, self.n_findings * n_states))
            self.finding_embeddings = nn.Embedding(self.n_findings * n_states, width)

    # -- weights ----------------------------------------------------------------------------------------------
    def load_backbone(self, checkpoint: str) -> None:
        path = Path(checkpoint)
        if not path.is_file():
            raise InvalidInputError(path, "contrastive checkpoint not found")
        state = {k.removeprefix("model."): v for k, v in read_state_dict(path).items() if not k.startswith("loss.")}
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
        memory, mask, _ = self._encode_views(images, view_mask, view_role)
        return memory, mask

    def _encode_views(self, images: Tensor, view_mask: Tensor | None, view_role: Tensor | None
                      ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        """Memory, its mask and the image features pooled over the current study's views (B, C) for the head."""
        if images.ndim == 4:
            images = images.unsqueeze(1)
        batch, views = images.shape[:2]
        if view_mask is None:
            view_mask = torch.ones(batch, views, dtype=torch.bool, device=images.device)
        if view_role is None:
            view_role = torch.zeros(batch, views, dtype=torch.long, device=images.device)
            view_role[:, 1:] = ROLES["other_view"]
        tokens = self.backbone.image_encoder(images.flatten(0, 1)).tokens  # (B*V, N, C)
        # The diagnosis describes the current study: average its valid views' tokens, never the prior's.
        current = (view_mask.bool() & (view_role != ROLES["prior"])).to(tokens.dtype)  # (B, V)
        per_view = tokens.mean(dim=1).view(batch, views, -1)
        pooled = (per_view * current.unsqueeze(2)).sum(1) / current.sum(1, keepdim=True).clamp_min(1)
        n_tokens = tokens.shape[1]
        if n_tokens > self.image_positions.num_embeddings:
            raise ConfigError(
                f"{n_tokens} image tokens per view > max_image_tokens {self.image_positions.num_embeddings}"
            )
        memory = self.image_projection(tokens) + self.image_positions.weight[:n_tokens]
        memory = memory.view(batch, views, n_tokens, -1) + self.roles(view_role).unsqueeze(2)
        mask = view_mask.bool().unsqueeze(2).expand(batch, views, n_tokens)
        return memory.flatten(1, 2), mask.flatten(1, 2), pooled

    def memory(self, images: Tensor, contexts: Sequence[str] | None = None, view_mask: Tensor | None = None,
               view_role: Tensor | None = None) -> tuple[Tensor, Tensor]:  # fmt: skip
        memory, mask, _ = self._memory_and_features(images, contexts, view_mask, view_role)
        return memory, mask

    def _memory_and_features(self, images: Tensor, contexts: Sequence[str] | None, view_mask: Tensor | None,
                             view_role: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        memory, mask, pooled = self._encode_views(images, view_mask, view_role)
        if self.use_context and contexts is not None:
            encoded = self.backbone.text_encoder(list(contexts))
            context = self.context_projection(encoded.tokens) + self.roles.weight[ROLES["context"]]
            context_mask = encoded.mask if encoded.mask is not None else torch.ones(context.shape[:2], dtype=torch.bool)
            memory = torch.cat([memory, context], dim=1)
            mask = torch.cat([mask, context_mask.to(mask.device)], dim=1)
        return memory, mask, pooled

    # -- diagnosis prompt (PromptMRG) -------------------------------------------------------------------------
    def finding_logits(self, pooled: Tensor) -> Tensor:
        """Pooled image features (B, C) -> per-observation state logits (B, 14, 4)."""
        return self.finding_head(pooled).view(len(pooled), self.n_findings, len(FINDING_STATE_CODES))

    def prompt_embeddings(self, states: Tensor) -> Tensor:
        """State indices (B, 14) -> the decoder's prefix embeddings (B, 14, width)."""
        offsets = torch.arange(self.n_findings, device=states.device) * len(FINDING_STATE_CODES)
        return self.finding_embeddings(states + offsets)

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

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        """Teacher-forced training loss: captioning (+ ``finding_loss_weight`` x finding cross-entropy); the
        arguments are those of :meth:`losses`."""
        return self.total_loss(self.losses(*args, **kwargs))

    def total_loss(self, losses: dict[str, Tensor]) -> Tensor:
        if "finding" not in losses:
            return losses["caption"]
        return losses["caption"] + self.finding_loss_weight * losses["finding"]

    def losses(
        self,
        images: Tensor,
        reports: Sequence[str],
        contexts: Sequence[str] | None = None,
        view_mask: Tensor | None = None,
        view_role: Tensor | None = None,
        max_length: int = 128,
        finding_codes: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """``caption``: mean token cross-entropy; ``finding`` (with the prompt): the head's cross-entropy.

        ``finding_codes`` (B, 14) are the reports' CheXpert codes; by default the rule-based labeler reads them from
        ``reports`` (pass the codes of the free-text report when ``reports`` are structured).
        """
        memory, mask, pooled = self._memory_and_features(images, contexts, view_mask, view_role)
        targets = self.tokenize_targets(reports, max_length)
        if not self.finding_prompt:
            caption = self.decoder(**targets, encoder_hidden_states=memory, encoder_attention_mask=mask.long()).loss
            return {"caption": caption}
        if finding_codes is None:
            finding_codes = torch.from_numpy(label_reports(list(reports)))
        states = codes_to_states(finding_codes.to(pooled.device))
        logits = self.finding_logits(pooled)
        finding = nn.functional.cross_entropy(logits.flatten(0, 1), states.flatten())
        prefix = self.prompt_embeddings(states)  # teacher forcing: the reference diagnosis
        embeds = torch.cat([prefix, self.decoder.transformer.wte(targets["input_ids"])], dim=1)
        ones = torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device)
        caption = self.decoder(
            inputs_embeds=embeds,
            attention_mask=torch.cat([ones, targets["attention_mask"]], dim=1),
            labels=torch.cat([torch.full_like(ones, -100), targets["labels"]], dim=1),
            encoder_hidden_states=memory,
            encoder_attention_mask=mask.long(),
        ).loss
        return {"caption": caption, "finding": finding}

    @torch.no_grad()
    def generate(
        self,
        images: Tensor,
        contexts: Sequence[str] | None = None,
        view_mask: Tensor | None = None,
        view_role: Tensor | None = None,
        return_findings: bool = False,
        **settings: Any,
    ) -> list[str] | tuple[list[str], Tensor]:
        """Beam search (``num_beams=1``: greedy) from ``<bos>`` (after the predicted diagnosis prompt, if any).

        ``settings``: any of :data:`GENERATION_DEFAULTS` (num_beams, max_new_tokens, min_new_tokens, length_penalty,
        no_repeat_ngram_size, use_cache) to change. ``return_findings``: also return the diagnosis the reports were
        prompted with, CheXpert codes (B, 14).
        """
        unknown = sorted(set(settings) - set(GENERATION_DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown generation setting(s) {unknown}; have {list(GENERATION_DEFAULTS)}")
        if return_findings and not self.finding_prompt:
            raise ConfigError("return_findings needs a model built with finding_prompt=true")
        memory, mask, pooled = self._memory_and_features(images, contexts, view_mask, view_role)
        tok = self.tokenizer
        start = torch.full((memory.shape[0], 1), tok.bos_token_id, dtype=torch.long, device=memory.device)
        if self.finding_prompt:
            states = self.finding_logits(pooled).argmax(-1)
            prefix = self.prompt_embeddings(states)
            inputs = {"inputs_embeds": torch.cat([prefix, self.decoder.transformer.wte(start)], dim=1)}
        else:
            inputs = {"input_ids": start}
        length = next(iter(inputs.values())).shape[1]
        output = self.decoder.generate(
            **inputs,
            attention_mask=torch.ones(len(start), length, dtype=torch.long, device=memory.device),
            encoder_hidden_states=memory,
            encoder_attention_mask=mask.long(),
            **{**GENERATION_DEFAULTS, **settings},
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        # With input_ids generate() returns them too (drop <bos>); with inputs_embeds only the new tokens.
        new_tokens = output if self.finding_prompt else output[:, 1:]
        reports = [t.strip() for t in tok.batch_decode(new_tokens, skip_special_tokens=True)]
        return (reports, states_to_codes(states)) if return_findings else reports


@register_architecture("report_generator")
def build_report_generator(**kwargs: Any) -> nn.Module:
    return ReportGenerator(**kwargs)
