"""HFTextEncoder: the cached frozen prefix gives the same features and gradients as the plain forward."""

from __future__ import annotations

import pytest
import torch

from medcl.errors import ConfigError
from medcl.models.text_encoders import HFTextEncoder

TEXTS = [
    "The lungs are clear bilaterally. No focal consolidation.",
    "Cardiomegaly.",
    "There is a small left pleural effusion and a right apical pneumothorax with a visible pleural line.",
]


@pytest.fixture(scope="module")
def encoders() -> tuple[HFTextEncoder, HFTextEncoder]:
    torch.manual_seed(0)
    plain = HFTextEncoder(trainable_layers=2, num_hidden_layers=3).eval()
    cached = HFTextEncoder(trainable_layers=2, num_hidden_layers=3, cache_frozen=True, cache_size=3).eval()
    cached.load_state_dict(plain.state_dict())
    return plain, cached


def test_cached_prefix_matches_plain_forward(encoders) -> None:
    plain, cached = encoders
    for texts in (TEXTS, TEXTS[::-1], TEXTS[1:2]):  # cold cache, warm cache in another order and padding
        want, got = plain(texts), cached(texts)
        assert got.tokens.shape == want.tokens.shape
        assert torch.equal(got.mask, want.mask)
        torch.testing.assert_close(got.pooled, want.pooled, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got.tokens[got.mask], want.tokens[want.mask], rtol=1e-5, atol=1e-5)


def test_cached_prefix_gradients_reach_only_trainable_layers(encoders) -> None:
    plain, cached = encoders
    for model in (plain, cached):
        model.zero_grad()
        model(TEXTS).pooled.square().sum().backward()
    for (name, p_plain), p_cached in zip(plain.named_parameters(), cached.parameters()):
        if p_plain.requires_grad:
            torch.testing.assert_close(p_cached.grad, p_plain.grad, rtol=1e-4, atol=1e-6, msg=name)
        else:
            assert p_cached.grad is None, name


def test_cache_is_bounded_and_dropped_on_load(encoders) -> None:
    plain, cached = encoders
    cached([*TEXTS, "No pneumothorax."])
    assert len(cached._prefix_cache) == 3 and "No pneumothorax." in cached._prefix_cache
    cached.load_state_dict(plain.state_dict())
    assert not cached._prefix_cache
    assert "_prefix_cache" not in "".join(cached.state_dict())


def test_cache_needs_frozen_layers() -> None:
    with pytest.raises(ConfigError, match="trainable_layers"):
        HFTextEncoder(num_hidden_layers=1, cache_frozen=True)
