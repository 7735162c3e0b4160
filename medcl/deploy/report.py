"""The ``report`` model kind: a report generator (image-text backbone + cross-attending GPT-2) served as text.

Logged: ``config`` (generator config with its backbone resolved, image size, generation settings), ``weights`` (the
generator's state dict) and ``hf`` (a folder of HF configs and tokenizers, :func:`save_hf_components`), so loading it
reaches for no model hub and no local pretrained files.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from torch import nn

from medcl.data.text.reports import ROLES, context_prompt
from medcl.deploy.image_text import radiograph_tensor, without_pretrained_weights
from medcl.deploy.pyfunc import MedclPyfunc, Payload, example_png, load_tensors, register_kind
from medcl.errors import ConfigError
from medcl.models.factory import merge, model_config
from medcl.models.image_encoders import HFVisionEncoder
from medcl.models.report_generator import GENERATION_SETTINGS, ReportGenerator
from medcl.models.text_encoders import HFTextEncoder


def save_hf_components(generator: nn.Module, root: str | Path) -> None:
    """Write the HF configs and tokenizers a :class:`~medcl.models.report_generator.ReportGenerator` is built from
    under ``root``: ``decoder/``, and ``text/``, ``image/`` for HF backbone towers.

    Rebuilding from these folders (:func:`offline_generator_spec`) needs no model hub and no local pretrained
    files: only the architecture comes from them, the weights from the logged state dict.
    """

    root = Path(root)
    generator.decoder.config.save_pretrained(root / "decoder")
    generator.tokenizer.save_pretrained(str(root / "decoder"))
    text = getattr(generator.backbone, "text_encoder", None)
    if isinstance(text, HFTextEncoder):
        text.net.config.save_pretrained(root / "text")  # vocabulary already grown by the section tokens
        text.tokenizer.save_pretrained(str(root / "text"))
    image = generator.backbone.image_encoder
    if isinstance(image, HFVisionEncoder):
        image.net.config.save_pretrained(root / "image")


def resolved_backbone(generator: Mapping[str, Any]) -> dict[str, Any]:
    """The full config of a report generator's backbone: its named JSON merged with ``backbone_overrides``."""

    backbone = model_config(generator["backbone"], **(generator.get("backbone_overrides") or {}))
    backbone.pop("architecture", None)
    return backbone


def offline_generator_spec(generator: Mapping[str, Any], root: str | Path) -> dict[str, Any]:
    """``ReportGenerator`` keyword arguments that rebuild the logged architecture from the folders of
    :func:`save_hf_components` under ``root``, with random weights (the state dict is loaded next)."""

    root = Path(root)
    spec = merge(dict(generator), {"backbone_overrides": resolved_backbone(generator), "checkpoint": None})
    spec.pop("architecture", None)
    decoder = str(root / "decoder")
    spec["decoder"] = {**spec.get("decoder", {}), "name_or_path": decoder, "tokenizer": decoder, "pretrained": False}
    backbone = spec["backbone_overrides"]
    if (root / "text").is_dir():
        backbone["text"] = {**backbone["text"], "name_or_path": str(root / "text"), "pretrained": False}
    hf_image = root / "image"
    backbone["image"] = without_pretrained_weights(backbone["image"], hf_image if hf_image.is_dir() else None)
    return spec


@register_kind
class ReportPyfunc(MedclPyfunc):
    """Generated radiology reports for single 2-D radiographs.

    An upload is one view of one study, with no other view, prior study or indication: the decoder's memory is that
    view alone (as the anchor) and, for generators trained with context, the context prompt is the model's explicit
    absence prompt (``[NHI]`` no indication, ``[NHPR]`` no prior report), which is what training saw for such
    studies. The report is generated from pixels only: no header value reaches the model. Artifacts: ``config``
    (generator config, image size, generation settings), ``weights`` (the generator's state dict) and ``hf``
    (folder: HF configs + tokenizers, see :func:`save_hf_components`).
    """

    kind = "report"
    capabilities = ("report",)
    voi_lut = True  # radiographs: display values through the file's VOI LUT / window

    def load(self, artifacts: Mapping[str, str]) -> None:

        super().load(artifacts)
        self.model = ReportGenerator(**offline_generator_spec(self.config["generator"], artifacts["hf"])).eval()
        self.model.load_state_dict(load_tensors(artifacts["weights"]))
        self.contexts = [context_prompt(None, None)] if self.model.use_context else None
        # HF fast tokenizers keep truncation/padding settings as mutable state: one generation at a time.
        self._generating = threading.Lock()

    def generator_inputs(self, image: MetaTensor) -> dict[str, Any]:
        """The generator's inputs for one upload: a one-view study (the anchor) and the absence context."""
        return {
            "images": radiograph_tensor(image, self.config["image_size"])[:, None],  # (1, 1 view, 1, S, S)
            "contexts": self.contexts,
            "view_mask": torch.ones(1, 1, dtype=torch.bool),
            "view_role": torch.full((1, 1), ROLES["current"], dtype=torch.long),
        }

    @torch.no_grad()
    def generate_report(self, image: MetaTensor) -> str:
        inputs = self.generator_inputs(image)
        with self._generating:
            return self.model.generate(**inputs, **self.config["generation"])[0]

    def predict_image(self, image: MetaTensor) -> dict[str, Any]:
        return {"report": self.generate_report(image)}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "image_size": self.config["image_size"],
            "generation": self.config["generation"],
            "structured": self.config.get("structured", False),
        }


def report_payload(task: Any, data_hparams: Mapping[str, Any], workdir: Path) -> Payload:
    """What a :class:`~medcl.tasks.report.ReportGeneration` task logs; the HF folder is written under ``workdir``.

    The generator config is the task's (model name + overrides), with its backbone resolved to a full config so
    the served architecture does not follow later edits of the backbone's JSON; the contrastive ``checkpoint`` it
    was fine-tuned from is dropped (its weights are in the state dict).
    """
    hparams = task.hparams
    generator = model_config(hparams["model"], **(hparams.get("model_overrides") or {}))
    if generator.pop("architecture", None) != "report_generator":
        raise ConfigError(f"model {hparams['model']!r} is not a report_generator architecture")
    generator.update(backbone_overrides=resolved_backbone(generator), checkpoint=None)
    payload_config = {
        "name": hparams["model"],
        "generator": generator,
        "image_size": int(data_hparams.get("image_size", 224)),
        "generation": {k: hparams[k] for k in GENERATION_SETTINGS},
        "structured": bool(hparams.get("structured", False)),
    }
    weights = {k: v.detach().cpu().clone() for k, v in task.model.state_dict().items()}
    hf = Path(workdir) / "hf"  # the artifact keeps the folder's name
    save_hf_components(task.model, hf)
    return Payload("report", payload_config, {"weights": weights}, (example_png(), "example.png"), {"hf": hf})
