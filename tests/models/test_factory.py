import pytest
import torch

from medcl.errors import ConfigError, InvalidInputError
from medcl.models import create_model, list_models, load_matching_state_dict, model_config
from medcl.models.factory import merge
from medcl.models.image_encoders import MonaiResNetEncoder


def test_merge_is_recursive_and_does_not_mutate():
    base = {"image": {"depth": 10, "widths": [1]}, "embed_dim": 8}
    out = merge(base, {"image": {"depth": 18}})
    assert out == {"image": {"depth": 18, "widths": [1]}, "embed_dim": 8}
    assert base["image"]["depth"] == 10


def test_demo_model_builds_by_name_with_overrides_and_embeds():
    assert "clip-cxr-demo" in list_models()
    model = create_model("clip-cxr-demo", embed_dim=32, image={"widths": [8, 8, 16, 16]}).eval()  # no dropout
    images = model.encode_image(torch.rand(2, 1, 64, 64))
    texts = model.encode_text(["No pleural effusion.", "[FINDINGS] Moderate cardiomegaly."])
    assert images.shape == texts.shape == (2, 32)
    assert torch.allclose(images.norm(dim=-1), torch.ones(2), atol=1e-5)
    # The offline MiniLM is pretrained: identical sentences embed identically, different ones do not.
    again = model.encode_text(["No pleural effusion."])
    assert torch.allclose(again[0], texts[0], atol=1e-5) and not torch.allclose(texts[0], texts[1])
    # Section markers are single added tokens.
    ids = model.text_encoder.tokenizer("[FINDINGS]", add_special_tokens=False)["input_ids"]
    assert len(ids) == 1


def test_text_encoder_trains_only_top_layers():
    model = create_model("clip-cxr-demo")
    trainable = {
        n.split(".")[2]
        for n, p in model.text_encoder.net.named_parameters()
        if p.requires_grad and n.startswith("encoder.layer.")
    }
    assert trainable == {"5"}
    assert not model.text_encoder.net.embeddings.word_embeddings.weight.requires_grad


def test_unknown_model_and_type_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        model_config("nope")
    with pytest.raises(ConfigError, match="image encoder type 'bad'"):
        create_model("clip-cxr-demo", image={"type": "bad"})


def test_state_dict_loading_reports_and_fails_on_too_few_matches():
    source = MonaiResNetEncoder(depth=10, widths=(8, 8, 16, 16))
    target = MonaiResNetEncoder(depth=10, widths=(8, 8, 16, 16))
    state = {f"module.{k}": v for k, v in source.net.state_dict().items()}
    report = load_matching_state_dict(target.net, state, source="ckpt", rename={"module.": ""})
    assert report.matched_fraction == 1.0 and not report.unexpected
    assert all(torch.equal(a, b) for a, b in zip(source.net.state_dict().values(), target.net.state_dict().values()))
    with pytest.raises(InvalidInputError, match="ckpt: only matched 0"):
        load_matching_state_dict(target.net, state, source="ckpt")
