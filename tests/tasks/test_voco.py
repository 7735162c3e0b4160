"""Volume pretraining tasks: VoCo (with / without EMA teacher), SimCLR-3D, SwinUNETR-SSL and Chaitanya's stages."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medcl.models.heads import ProjectionHead
from medcl.models.volume import create_network, load_encoder_weights
from medcl.tasks.chaitanya import ChaitanyaPretraining
from medcl.tasks.ssl3d import SimCLR3DPretraining, SwinSSLPretraining, cut_out, holes_for_fraction, rotate_in_plane
from medcl.tasks.voco import VoCoPretraining

torch.set_num_threads(1)
TINY = {"features": [4, 4, 8, 8, 16, 4]}


def _voco_batch(batch: int = 2, crops: int = 2, bases: int = 4, size: int = 32) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    overlap = torch.rand(batch, crops, bases, generator=generator)
    return {
        "crops": torch.rand(batch, crops, 1, size, size, size, generator=generator),
        "bases": torch.rand(batch, bases, 1, size, size, size, generator=generator),
        "overlap": overlap / overlap.sum(-1, keepdim=True),
    }


def test_voco_step_backpropagates_and_teacher_follows_student_by_ema():
    torch.manual_seed(0)
    task = VoCoPretraining(
        model="unet3d-small", model_overrides=TINY, hidden_dim=32, embed_dim=16, teacher_momentum=0.5
    )
    terms = task.pretraining_loss(_voco_batch())
    assert set(terms) >= {"loss", "position", "negative", "regularization", "position_mae"}
    terms["loss"].backward()
    assert task.encoder.conv_0.conv_0.conv.weight.grad is not None
    assert all(p.grad is None for p in task.teacher_encoder.parameters())  # the teacher gets no gradient
    student = task.encoder.down_4.convs.conv_1.conv.weight
    teacher = task.teacher_encoder.down_4.convs.conv_1.conv.weight
    with torch.no_grad():
        student.add_(1.0)
    before = teacher.detach().clone()
    task.on_train_batch_end(None, None, 0)
    torch.testing.assert_close(teacher, 0.5 * before + 0.5 * student.detach())


def test_voco_without_teacher_and_checkpoint_keys_match_the_segmentation_encoder(tmp_path):
    task = VoCoPretraining(
        model="unet3d-small", model_overrides=TINY, hidden_dim=32, embed_dim=16, teacher_momentum=None
    )
    assert task.teacher_encoder is None
    assert torch.isfinite(task.pretraining_loss(_voco_batch())["loss"])
    torch.save({"state_dict": task.state_dict()}, tmp_path / "voco.ckpt")
    network = create_network("unet3d-small", out_channels=3, **TINY)
    report = load_encoder_weights(network, tmp_path / "voco.ckpt")
    assert report.matched_fraction == 1.0 and not report.missing
    assert torch.equal(network.down_2.convs.conv_0.conv.weight, task.encoder.down_2.convs.conv_0.conv.weight)


def test_voco_overfits_a_fixed_batch():
    """The loss must go down when the optimiser repeatedly sees one batch (checks the wiring, not the method)."""
    torch.manual_seed(0)
    task = VoCoPretraining(
        model="unet3d-small", model_overrides=TINY, hidden_dim=32, embed_dim=16, teacher_momentum=None
    )
    optimizer = torch.optim.AdamW(task.parameters(), lr=3e-3)
    batch = _voco_batch()
    losses = []
    for _ in range(12):
        loss = task.pretraining_loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_rotation_and_cutout_helpers():
    volumes = torch.arange(2 * 4 * 4 * 2, dtype=torch.float32).view(2, 1, 4, 4, 2)
    rotated = rotate_in_plane(volumes, torch.tensor([0, 2]))
    assert torch.equal(rotated[0], volumes[0]) and torch.equal(rotated[1], volumes[1].flip(1).flip(2))
    generator = torch.Generator().manual_seed(0)
    cut = cut_out(torch.ones(4, 1, 16, 16, 16), fraction=0.5, block=4, generator=generator)
    assert 0.3 < float((cut == 0).float().mean()) < 0.7


def test_cutout_zeroes_whole_blocks_covering_the_fraction_independently_per_volume():
    """SwinUNETR-SSL's inpainting input: block^3 cubes zeroed over about ``fraction`` of every volume (all channels
    alike), a different pattern per volume, the input itself left intact (it is the reconstruction target)."""
    volumes = torch.rand(8, 2, 32, 32, 32) + 0.1  # no zeros of its own
    original = volumes.clone()
    cut = cut_out(volumes, fraction=0.3, block=4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(volumes, original)
    zero = (cut == 0).float()
    assert torch.equal(zero[:, 0], zero[:, 1])  # channels share the holes
    assert torch.equal(cut[zero == 0], volumes[zero == 0])  # the rest is untouched
    fractions = zero.mean(dim=(1, 2, 3, 4))
    assert float((fractions - 0.3).abs().max()) < 0.04 and abs(float(fractions.mean()) - 0.3) < 0.015
    masks = zero[:, 0].flatten(1)
    assert all(not torch.equal(masks[i], masks[j]) for i in range(8) for j in range(i))  # one draw per volume
    # Every zero voxel lies in a fully zeroed 4^3 cube: the holes are whole blocks, not scattered voxels.
    whole = -F.max_pool3d(-zero[:, :1], 4, stride=1)  # 1 where the cube starting at that voxel is all zero
    assert torch.equal(F.max_pool3d(F.pad(whole, (3, 3) * 3), 4, stride=1), zero[:, :1])
    again = cut_out(volumes, fraction=0.3, block=4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, cut) and torch.equal(cut_out(volumes, 0.0, 4), volumes)


def test_hole_count_matches_the_coverage_of_random_holes():
    holes = holes_for_fraction((24, 20, 16), 4, 0.3)
    rng = np.random.default_rng(0)
    covered = []
    for _ in range(200):  # holes placed as RandCoarseDropout places them: uniform over the positions inside
        mask = np.zeros((24, 20, 16), bool)
        for x, y, z in rng.integers(0, [21, 17, 13], size=(holes, 3)):
            mask[x : x + 4, y : y + 4, z : z + 4] = True
        covered.append(mask.mean())
    assert abs(np.mean(covered) - 0.3) < 0.01
    assert holes_for_fraction((4, 4, 4), 8, 0.3) == 1  # a block larger than the volume still makes one hole


@pytest.mark.parametrize("task_class", [SimCLR3DPretraining, SwinSSLPretraining])
def test_two_view_baselines_train_the_same_encoder(task_class):
    task = task_class(model="unet3d-small", model_overrides=TINY)
    batch = {"view1": torch.rand(2, 1, 32, 32, 32), "view2": torch.rand(2, 1, 32, 32, 32)}
    terms = task.pretraining_loss(batch)
    terms["loss"].backward()
    assert torch.isfinite(terms["loss"])
    assert task.encoder.conv_0.conv_0.conv.weight.grad.abs().sum() > 0
    if task_class is SwinSSLPretraining:
        assert set(terms) == {"loss", "rotation", "contrastive", "reconstruction"}


def test_simclr3d_head_separates_near_constant_pooled_features():
    """Globally pooled instance-normed U-Net features are almost the same for every volume: through a plain MLP head
    all pairs had cosine 0.999 and NT-Xent sat at log(2N - 1) for 1500 steps on synthetic CT (docs/volume.md).
    SimCLR's batch-norm head must spread different volumes apart from the first step."""
    torch.manual_seed(0)
    task = SimCLR3DPretraining(model="unet3d-small", model_overrides=TINY, embed_dim=16)
    generator = torch.Generator().manual_seed(0)
    smooth = torch.rand(6, 1, 4, 4, 4, generator=generator)  # six different smooth "anatomies"
    volumes = torch.nn.functional.interpolate(smooth, size=(32, 32, 32), mode="trilinear")
    pooled = task.encoder(volumes).pooled
    assert (pooled.std(0) / pooled.abs().mean(0)).mean() < 0.1  # the encoder's pooled features barely vary
    off_diagonal = ~torch.eye(6, dtype=torch.bool)

    def mean_cosine(head: torch.nn.Module) -> float:
        embeddings = torch.nn.functional.normalize(head(pooled), dim=1)
        return float((embeddings @ embeddings.T)[off_diagonal].mean())

    torch.manual_seed(0)
    assert mean_cosine(ProjectionHead(task.encoder.out_dim, 16, "mlp")) > 0.99  # the failure the head exists for
    assert mean_cosine(task.projection) < 0.8


def test_chaitanya_global_then_local_stage(tmp_path):
    batch = {
        "view1": torch.rand(2, 4, 1, 32, 32),
        "view2": torch.rand(2, 4, 1, 32, 32),
        "partition": torch.arange(4).repeat(2, 1),
    }
    first = ChaitanyaPretraining(model="unet2d-small", stage="global")
    first.pretraining_loss(batch)["loss"].backward()
    torch.save({"state_dict": first.state_dict()}, tmp_path / "global.ckpt")
    second = ChaitanyaPretraining(model="unet2d-small", stage="local", init_from=str(tmp_path / "global.ckpt"))
    assert torch.equal(second.network.down_3.convs.conv_0.conv.weight, first.network.down_3.convs.conv_0.conv.weight)
    frozen = copy.deepcopy(second.network.down_1.convs.conv_0.conv.weight)
    loss = second.pretraining_loss(batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and second.network.down_1.convs.conv_0.conv.weight.grad is None
    assert second.network.upcat_2.convs.conv_0.conv.weight.grad is not None  # the decoder learns
    assert torch.equal(frozen, second.network.down_1.convs.conv_0.conv.weight)
    with pytest.raises(ValueError, match="2D basic_unet"):
        ChaitanyaPretraining(model="unet3d-small")


@pytest.mark.slow
def test_voco_and_segmentation_steps_with_swinunetr():
    """The SwinUNETR path end to end on CPU (slow: tens of seconds per 64^3 step on a shared 2-core machine)."""
    from medcl.tasks.segmentation import Segmentation

    task = VoCoPretraining(model="swinunetr-tiny", hidden_dim=32, embed_dim=16, teacher_momentum=0.9)
    batch = _voco_batch(batch=1, crops=1, bases=2, size=64)
    loss = task.pretraining_loss(batch)["loss"]
    loss.backward()
    assert torch.isfinite(loss) and task.encoder.swinViT.patch_embed.proj.weight.grad is not None
    segmentation = Segmentation(model="swinunetr-tiny", num_classes=3, roi_size=(64, 64, 64))
    step = segmentation.training_step(
        {"image": torch.rand(1, 1, 64, 64, 64), "label": torch.randint(0, 3, (1, 1, 64, 64, 64)).float()}, 0
    )
    assert torch.isfinite(step)
