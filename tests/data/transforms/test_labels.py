"""Class selection: array and dictionary forms."""

from __future__ import annotations

import numpy as np
import torch

from medcl.data.transforms import SelectLabels, SelectLabelsd


def test_select_labels_keeps_listed_values_in_order():
    label = torch.tensor([[0, 1, 2, 6, 7, 9]])
    out = SelectLabelsd("label", values=[6, 1])({"label": label})["label"]
    assert out.tolist() == [[0, 2, 0, 1, 0, 0]]


def test_array_and_dictionary_forms_agree_on_tensors_and_arrays():
    rng = np.random.default_rng(0)
    for label in (rng.integers(0, 14, (1, 6, 5, 4)), torch.from_numpy(rng.integers(0, 14, (1, 6, 5, 4)))):
        alone = SelectLabels([11, 2, 5])(label)
        item = {"label": label, "image": label}
        wrapped = SelectLabelsd("label", values=[11, 2, 5])(item)
        assert type(alone) is type(label) and type(wrapped["label"]) is type(label)
        np.testing.assert_array_equal(np.asarray(wrapped["label"]), np.asarray(alone))
        np.testing.assert_array_equal(np.asarray(alone), np.select([label == 11, label == 2, label == 5], [1, 2, 3]))
        assert wrapped["image"] is label and item["label"] is label  # only the listed key changes; input untouched
