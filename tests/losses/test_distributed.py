"""Two-process gloo checks: every gathering loss gives, on each rank, the single-process loss and gradients.

DDP convention (see ``medcl.losses.distributed``): rank r returns L_r and receives d(sum_r' L_r')/dx_r; DDP
averages parameter gradients. So on the concatenated batch with loss L: mean_r L_r == L, the gradient on rank r's
inputs == world * dL/dx[rank block], and mean_r of parameter gradients == dL/dtheta.
"""

from __future__ import annotations

import copy
import socket
from collections.abc import Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from losses_testing import assert_close_all, value_and_grads

from medcl.losses import (
    ClipLoss,
    DCLWLoss,
    GlobalPartitionLoss,
    MVDHELLoss,
    MVInfoNCELoss,
    NTXentLoss,
    SigLipLoss,
    SupConLoss,
)

WORLD = 2
PER_RANK = 6

Case = tuple[torch.nn.Module, list[torch.Tensor], dict[str, torch.Tensor]]


def _features(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _clip_case(groups: bool = False, labels: bool = False, **options) -> Callable[[], Case]:
    def build() -> Case:
        n = WORLD * PER_RANK
        kwargs = {}
        if groups:
            kwargs["group_ids"] = GROUPS
        if labels:
            kwargs["label_targets"] = (_features(3, n, 4) > 0).double()
        return ClipLoss(**options).double(), [_features(1, n, 5), _features(2, n, 5)], kwargs

    return build


def _case(
    make_loss: Callable[[], torch.nn.Module],
    *shapes: tuple[int, ...],
    ids: torch.Tensor | None = None,
    id_key: str | None = None,
) -> Callable[[], Case]:
    """Inputs: one float64 tensor per shape (global batch first), then ``ids`` positionally or as ``id_key``."""

    def build() -> Case:
        args = [_features(seed, *shape) for seed, shape in enumerate(shapes, start=10)]
        if ids is not None and id_key is None:
            args.append(ids)
        kwargs = {id_key: ids} if id_key is not None else {}
        return make_loss().double(), args, kwargs

    return build


N = WORLD * PER_RANK
GROUPS = torch.tensor([0, 0, 1, 2, 3, 3, 3, 4, 5, 6, 6, 7])
PARTITIONS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])

CASES: dict[str, Callable[[], Case]] = {
    "ntxent": _case(NTXentLoss, (N, 5), (N, 5)),
    "dclw": _case(DCLWLoss, (N, 5), (N, 5)),
    "supcon": _case(SupConLoss, (N, 3, 5), ids=torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 1, 0, 4, 2])),
    "mv_infonce": _case(MVInfoNCELoss, (N, 3, 5)),
    "mv_dhel": _case(MVDHELLoss, (N, 4, 5)),
    "global_partition": _case(GlobalPartitionLoss, (N, 5), (N, 5), ids=PARTITIONS),
    "siglip": _case(SigLipLoss, (N, 5), (N, 5)),
    "siglip_chunked_groups": _case(lambda: SigLipLoss(chunk_size=4), (N, 5), (N, 5), ids=GROUPS, id_key="group_ids"),
    "clip": _clip_case(),
    "clip_global_loss": _clip_case(local_loss=False),
    "clip_chunked_groups": _clip_case(chunk_size=4, groups=True),
    "clip_labels": _clip_case(labels=True),
    "clip_global_chunked_labels": _clip_case(local_loss=False, chunk_size=5, labels=True),
}


def _run(loss_fn: torch.nn.Module, args: list[torch.Tensor], kwargs: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    return value_and_grads(lambda *xs: loss_fn(*xs, **kwargs), args, list(loss_fn.parameters()))


def _worker(rank: int, port: int, names: list[str]) -> None:
    torch.set_num_threads(1)
    references = {}
    for name in names:  # single process, before the process group exists
        loss_fn, args, kwargs = CASES[name]()
        references[name] = _run(copy.deepcopy(loss_fn), args, kwargs)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        for name in names:
            loss_fn, args, kwargs = CASES[name]()
            local_args = [x.chunk(WORLD)[rank] for x in args]
            local_kwargs = {key: x.chunk(WORLD)[rank] for key, x in kwargs.items()}
            value, *grads = _run(loss_fn, local_args, local_kwargs)
            n_inputs = sum(x.is_floating_point() for x in args)
            input_grads, param_grads = grads[:n_inputs], grads[n_inputs:]
            mean_value = value.clone()
            dist.all_reduce(mean_value)
            mean_param_grads = [g.clone() for g in param_grads]
            for g in mean_param_grads:
                dist.all_reduce(g)
            expected_value, *expected_grads = references[name]
            expected_input = [WORLD * g.chunk(WORLD)[rank] for g in expected_grads[:n_inputs]]
            actual = [mean_value / WORLD, *input_grads, *(g / WORLD for g in mean_param_grads)]
            try:
                assert_close_all(actual, [expected_value, *expected_input, *expected_grads[n_inputs:]])
            except AssertionError as error:
                raise AssertionError(f"case {name}, rank {rank}: {error}") from None
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.dist
def test_gathering_losses_match_single_process_on_concatenated_batch():
    mp.spawn(_worker, args=(_free_port(), list(CASES)), nprocs=WORLD, join=True)
