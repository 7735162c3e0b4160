"""The base of the dictionary transforms that turn one preprocessed volume into pretraining samples.

VoCo crops (:mod:`~medcl.data.transforms.voco`), SSL views (:mod:`~medcl.data.transforms.views`) and partition slices
(:mod:`~medcl.data.transforms.slices`) each pop the volume from the item and write their samples under fixed names
(``crops``, ``view1``, ...), which the pretraining tasks read. They therefore take exactly one key: two volumes would
write the same names.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from medcl.errors import ConfigError


class VolumeSamplerd(Randomizable, MapTransform):
    """One volume in, named samples out; its own random draws plus those of the MONAI transforms it uses.

    Subclasses list those transforms in :meth:`random_parts`; :meth:`set_random_state` seeds each of them from this
    transform's generator, so one seed (``Compose.set_random_state``, a validation loader's fixed seed) fixes every
    sample.
    """

    def __init__(self, keys: KeysCollection) -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ConfigError(f"{type(self).__name__} samples one volume, got keys {list(self.keys)}")

    def random_parts(self) -> Sequence[Randomizable]:
        return ()

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> Any:
        super().set_random_state(seed, state)
        for part in self.random_parts():
            part.set_random_state(seed=int(self.R.randint(2**31)))
        return self

    def randomize(self, data: Any = None) -> Any:
        return None

    def pop_volume(self, d: dict[Hashable, Any]) -> torch.Tensor:
        """Remove the volume from the (copied) item: the samples replace it, and the batch does not carry it."""
        return torch.as_tensor(d.pop(self.keys[0]), dtype=torch.float32)
