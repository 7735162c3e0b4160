"""Label maps: keep a chosen subset of classes."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, Transform


class SelectLabels(Transform):
    """Keep label values ``values`` as 1..n (in that order) and set every other value to 0.

    MONAI's ``MapLabelValue`` leaves unlisted values unchanged; a subset of BTCV's 13 organs needs the rest to be
    background.
    """

    def __init__(self, values: Sequence[int]) -> None:
        self.values = [int(v) for v in values]

    def __call__(self, label: NdarrayOrTensor) -> NdarrayOrTensor:
        out = torch.zeros_like(label) if isinstance(label, torch.Tensor) else np.zeros_like(label)
        for index, value in enumerate(self.values, start=1):
            out[label == value] = index
        return out


class SelectLabelsd(MapTransform):
    """Dictionary-based wrapper of :class:`SelectLabels`."""

    def __init__(self, keys: KeysCollection, values: Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.selector = SelectLabels(values)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.selector(d[key])
        return d
