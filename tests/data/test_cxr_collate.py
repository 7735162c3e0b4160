"""CXR batches: per-sentence gaze maps padded to the batch's most sentences, with a mask of the real ones."""

from __future__ import annotations

import torch

from medcl.data.cxr import cxr_collate


def _item(count: int, value: float) -> dict:
    maps = torch.full((count, 4, 4), value) if count else torch.zeros(1, 4, 4)  # as LoadGazeSentencesd gives them
    return {"image": torch.full((1, 4, 4), value), "gaze_sentences": maps, "gaze_sentence_count": count,
            "gaze_sentence_text": [f"s{i}" for i in range(count)]}  # fmt: skip


def test_sentence_maps_are_zero_padded_and_masked():
    batch = cxr_collate([_item(2, 1.0), _item(0, 2.0), _item(3, 3.0)])
    assert batch["image"].shape == (3, 1, 4, 4)
    assert batch["gaze_sentences"].shape == (3, 3, 4, 4)
    assert batch["gaze_sentence_mask"].tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    for row, (count, value) in enumerate(((2, 1.0), (0, 2.0), (3, 3.0))):
        assert bool((batch["gaze_sentences"][row, :count] == value).all())
        assert float(batch["gaze_sentences"][row, count:].abs().sum()) == 0.0
    assert batch["gaze_sentence_text"] == [["s0", "s1"], [], ["s0", "s1", "s2"]]
    empty = cxr_collate([_item(0, 1.0), _item(0, 2.0)])
    assert empty["gaze_sentences"].shape == (2, 1, 4, 4) and not empty["gaze_sentence_mask"].any()
