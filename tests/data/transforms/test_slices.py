"""2.5D neighbour stacks, slice-wise training slabs and Chaitanya's partition sampling."""

from __future__ import annotations

import pytest
import torch
from monai.transforms import Compose

from medcl.data.transforms import AxialSlabd, NeighbourSlices, PartitionSlicesd
from medcl.errors import ConfigError, InvalidInputError


def test_neighbour_slices_match_a_clamped_loop_and_axial_slabs_keep_the_centre_label():
    volume = torch.randn(2, 5, 4, 6)  # (C, X, Y, Z)
    stacks = NeighbourSlices(context=1)(volume)  # every slice
    assert stacks.shape == (6, 6, 5, 4)
    for z in range(6):
        expected = torch.cat([volume[c : c + 1, ..., min(max(z + d, 0), 5)] for c in range(2) for d in (-1, 0, 1)])
        torch.testing.assert_close(stacks[z], expected)
    torch.testing.assert_close(NeighbourSlices(context=1)(volume, [4, 0]), stacks[[4, 0]])
    torch.testing.assert_close(NeighbourSlices(context=0)(volume, [3])[0], volume[..., 3])
    label = torch.arange(3.0).view(1, 1, 1, 3).expand(1, 5, 4, 3)
    sample = AxialSlabd(["image", "label"], context=1)({"image": volume[..., 1:4], "label": label})
    torch.testing.assert_close(sample["image"], stacks[2])
    assert sample["label"].shape == (1, 5, 4) and bool((sample["label"] == 1).all())
    with pytest.raises(InvalidInputError, match="expected 3 slices"):
        AxialSlabd(["image"], context=1)({"image": volume})
    with pytest.raises(ConfigError):
        NeighbourSlices(context=-1)


def test_axial_slab_dictionary_form_equals_the_array_form_for_every_image_key():
    slab = torch.randn(1, 6, 5, 5)  # k = 2
    other = torch.randn(1, 6, 5, 5)
    out = AxialSlabd(["image", "other"], context=2)({"image": slab, "other": other, "label": slab[..., :1]})
    torch.testing.assert_close(out["image"], NeighbourSlices(2)(slab, [2])[0])
    torch.testing.assert_close(out["other"], NeighbourSlices(2)(other, [2])[0])
    assert out["label"].shape == (1, 6, 5, 1)  # not among the keys: left as it was


def _z_ramp(depth: int = 16) -> torch.Tensor:
    """Voxel value = its slice index, so a 2D slice tells where it came from."""
    return torch.arange(depth, dtype=torch.float32).view(1, 1, 1, depth).expand(1, 8, 8, depth).contiguous()


def test_partition_slices_take_one_slice_per_partition_with_neighbours():
    slicer = PartitionSlicesd("image", partitions=4, context=1, spatial_augment=False)
    slicer.intensity = Compose([])  # no intensity change: slice values stay their z index
    slicer.set_random_state(seed=0)
    out = slicer({"image": _z_ramp()})
    assert "image" not in out
    assert out["view1"].shape == (4, 3, 8, 8) and out["partition"].tolist() == [0, 1, 2, 3]
    centre = out["view1"][:, 1, 0, 0]
    assert all(4 * p <= z < 4 * (p + 1) for p, z in enumerate(centre.tolist()))  # one slice per partition
    torch.testing.assert_close(out["view1"][:, 0, 0, 0], (centre - 1).clamp(min=0))  # 2.5D neighbours
    torch.testing.assert_close(out["view2"], out["view1"])  # without augmentation both views are the slice itself
    with pytest.raises(InvalidInputError, match="fewer than 4 partitions"):
        slicer({"image": _z_ramp(3)})


def test_partition_slice_views_differ_keep_their_size_and_replay_under_one_seed():
    volume = torch.rand(1, 20, 12, 8, generator=torch.Generator().manual_seed(0))

    def sample(seed: int) -> dict[str, torch.Tensor]:
        slicer = PartitionSlicesd("image", partitions=2, spatial_augment=True).set_random_state(seed=seed)
        return slicer({"image": volume})

    first, again, other = sample(3), sample(3), sample(4)
    assert first["view1"].shape == first["view2"].shape == (2, 1, 20, 12)  # cropped, then resized back
    assert not torch.equal(first["view1"], first["view2"])
    assert all(torch.equal(first[name], again[name]) for name in ("view1", "view2"))
    assert not torch.equal(first["view1"], other["view1"])
    with pytest.raises(ConfigError, match="one volume"):
        PartitionSlicesd(["image", "label"])
