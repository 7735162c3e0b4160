"""medcl's MONAI transforms and the pipelines built from them, one concept per module (as in ``monai.transforms``).

* :mod:`.loading`: images, masks and gaze heatmaps onto one grid (``LoadGazeHeatmap(d)``, ``load_transforms``);
* :mod:`.cxr`: the radiograph pipeline (``cxr_transforms``);
* :mod:`.volume`: the 3-D pipelines (``volume_preprocessing``, ``volume_transforms``);
* :mod:`.labels`: class selection (``SelectLabels(d)``);
* :mod:`.slices`: 2.5D neighbour stacks, slice-wise training slabs, Chaitanya's partition sampling;
* :mod:`.voco`: VoCo base and random crops with overlap labels;
* :mod:`.views`: two-view sampling for 3-D contrastive pretraining;
* :mod:`.sampling`: the base of the volume samplers above.

Where an operation is used on its own too, it has an array transform and a dictionary twin (``X`` / ``Xd``; the
dictionary one copies the item, and a random one draws once for all its keys). Deterministic preprocessing is
described once, by :class:`medcl.data.preprocessing.Preprocessing`; the pipelines here put loading before it and
random augmentation after it, so :mod:`medcl.data.cache` caches everything up to the first random transform.
"""

from __future__ import annotations

from medcl.data.transforms.cxr import cxr_transforms
from medcl.data.transforms.labels import SelectLabels, SelectLabelsd
from medcl.data.transforms.loading import LoadGazeHeatmap, LoadGazeHeatmapd, LoadGazeSentencesd, load_transforms
from medcl.data.transforms.sampling import VolumeSamplerd
from medcl.data.transforms.slices import AxialSlabd, NeighbourSlices, PartitionSlicesd
from medcl.data.transforms.views import TwoViewsd, view_augmentation
from medcl.data.transforms.voco import VoCoCropsd, crop_augmentation, overlap_labels
from medcl.data.transforms.volume import volume_preprocessing, volume_transforms

__all__ = [
    "AxialSlabd",
    "LoadGazeHeatmap",
    "LoadGazeHeatmapd",
    "LoadGazeSentencesd",
    "NeighbourSlices",
    "PartitionSlicesd",
    "SelectLabels",
    "SelectLabelsd",
    "TwoViewsd",
    "VoCoCropsd",
    "VolumeSamplerd",
    "crop_augmentation",
    "cxr_transforms",
    "load_transforms",
    "overlap_labels",
    "view_augmentation",
    "volume_preprocessing",
    "volume_transforms",
]
