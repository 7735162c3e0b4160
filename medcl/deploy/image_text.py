"""The ``image_text`` model kind: the image tower of an image-text task, served as embeddings + zero-shot scores.

Logged: ``config`` (image tower config, image size, class names, logit scale), ``weights`` (image tower state dict)
and ``prototypes`` (positive/negative prompt embeddings per class, computed with the trained text tower at logging
time, so serving needs no tokenizer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from torch import Tensor, nn

from medcl.data.cxr import cxr_pipeline
from medcl.data.uploads import UPLOAD_NAME, without_loading
from medcl.deploy.pyfunc import MedclPyfunc, Payload, example_png, load_tensors, register_kind, require_finite
from medcl.errors import ConfigError, InvalidInputError
from medcl.eval.zeroshot import PROMPTS, class_prompt_embeddings, zero_shot_scores
from medcl.models.factory import build_component, model_config
from medcl.models.heads import ProjectionHead
from medcl.models.image_encoders import IMAGE_ENCODERS


def without_pretrained_weights(image: Mapping[str, Any], hf_config_dir: str | None = None) -> dict[str, Any]:
    """An image-encoder spec that builds the architecture only: weights come from the logged state dict, never from
    a hub or a local pretraining checkpoint. ``hf_config_dir``: a saved HF config for ``type: hf`` towers."""
    spec = dict(image)
    if spec.get("type") != "hf":
        spec["checkpoint"] = None
        return spec
    spec["pretrained"] = False
    if hf_config_dir is not None:
        spec["name_or_path"] = str(hf_config_dir)
    return spec


class ImageEmbedder(nn.Module):
    """The image tower of an ``image_text`` model: encoder + projection -> L2-normalised embedding."""

    def __init__(self, image: Mapping[str, Any], embed_dim: int, projection: str = "mlp") -> None:
        super().__init__()
        self.image_encoder = build_component(without_pretrained_weights(image), IMAGE_ENCODERS, "image encoder")
        self.image_projection = ProjectionHead(self.image_encoder.out_dim, embed_dim, projection)

    def forward(self, images: Tensor) -> Tensor:
        return F.normalize(self.image_projection(self.image_encoder(images).pooled), dim=-1)


def radiograph_tensor(image: MetaTensor, image_size: int) -> Tensor:
    """A decoded upload -> the (1, 1, S, S) tensor the CXR training pipeline produces for evaluation."""
    spatial = tuple(image.shape[1:])
    if len(spatial) == 3 and spatial[2] == 1:
        image = image[..., 0]
    elif len(spatial) != 2:
        raise InvalidInputError(UPLOAD_NAME, f"expected a 2-D radiograph, got an image of shape {spatial}")
    if image.shape[0] == 3:
        image = image.mean(dim=0, keepdim=True)  # RGB exports of grey radiographs
    elif image.shape[0] != 1:
        raise InvalidInputError(UPLOAD_NAME, f"expected a grey or RGB image, got {image.shape[0]} channels")
    out = without_loading(cxr_pipeline(image_size, train=False))({"image": image})["image"]
    out = torch.as_tensor(out, dtype=torch.float32)[None]
    if not bool(torch.isfinite(out).all()):  # finite pixels whose range overflows float32 in the normalisation
        raise InvalidInputError(UPLOAD_NAME, "pixel values too large: normalising them gives NaN or infinite values")
    return out


@register_kind
class ImageTextPyfunc(MedclPyfunc):
    """Embeddings and zero-shot finding scores for 2-D radiographs."""

    kind = "image_text"
    capabilities = ("embed", "zero-shot")
    voi_lut = True  # radiographs: display values through the file's VOI LUT / window

    def load(self, artifacts: Mapping[str, str]) -> None:
        super().load(artifacts)
        cfg = self.config
        self.model = ImageEmbedder(cfg["image"], cfg["embed_dim"], cfg.get("projection", "mlp")).eval()
        self.model.load_state_dict(load_tensors(artifacts["weights"]))
        prototypes = load_tensors(artifacts["prototypes"])
        self.positive, self.negative = prototypes["positive"], prototypes["negative"]
        self.classes: list[str] = list(cfg["classes"])

    @torch.no_grad()
    def embed(self, image: MetaTensor) -> Tensor:
        return require_finite(self.model(radiograph_tensor(image, self.config["image_size"]))[0], "embedding")

    def zero_shot(self, embedding: Tensor) -> dict[str, float]:
        scores = zero_shot_scores(embedding[None], self.positive, self.negative, self.config["logit_scale"])[0]
        scores = require_finite(torch.as_tensor(scores), "zero-shot scores")
        return {name: float(s) for name, s in zip(self.classes, scores)}

    @torch.no_grad()
    def self_check(self) -> None:
        self.zero_shot(self.embed(self.decode(example_png(), "example.png")))

    def predict_image(self, image: MetaTensor) -> dict[str, Any]:
        embedding = self.embed(image)
        return {"embedding": embedding.tolist(), **self.zero_shot(embedding)}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "embed_dim": self.config["embed_dim"],
            "image_size": self.config["image_size"],
            "classes": self.classes,
        }


def image_text_payload(task: Any, data_hparams: Mapping[str, Any]) -> Payload:
    """What an image-text task (:class:`~medcl.tasks.ImageTextPretraining` or a subclass) logs."""
    hparams = task.hparams
    config = model_config(hparams["model"], **(hparams.get("model_overrides") or {}))
    if config.get("architecture") != "image_text":
        raise ConfigError(f"model {hparams['model']!r} is not an image_text architecture")
    classes = list(hparams.get("zero_shot_classes") or PROMPTS)
    model = task.model
    was_training = model.training
    model.eval()
    with torch.no_grad():
        positive, negative = class_prompt_embeddings(
            lambda texts: model.encode_text(texts).cpu(), {c: PROMPTS[c] for c in classes}
        )
    model.train(was_training)
    temperature = getattr(task.loss, "temperature", None)
    logit_scale = 1.0 / float(temperature) if temperature is not None else 1.0 / 0.07
    weights = {
        k: v.detach().cpu().clone()
        for k, v in model.state_dict().items()
        if k.startswith(("image_encoder.", "image_projection."))
    }
    payload_config = {
        "name": hparams["model"],
        "image": config["image"],
        "embed_dim": int(config["embed_dim"]),
        "projection": config.get("projection", "mlp"),
        "image_size": int(data_hparams.get("image_size", 224)),
        "classes": classes,
        "logit_scale": logit_scale,
    }
    tensors = {"weights": weights, "prototypes": {"positive": positive, "negative": negative}}
    return Payload("image_text", payload_config, tensors, example=(example_png(), "example.png"))
