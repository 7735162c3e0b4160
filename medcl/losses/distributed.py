"""Cross-rank helpers shared by every loss that contrasts against the global batch.

Convention (the DDP one): each rank returns its own loss ``L_r`` and the gradient that reaches rank ``r``'s inputs is
``d(sum_r' L_r') / dx_r``. DDP then averages parameter gradients over ranks, so training equals single-process
training on the concatenated batch with loss ``mean_r L_r``. That is why the backward of :func:`gather_with_grad`
all-reduces (sums) the incoming gradient before slicing out the local block (lightly's ``GatherLayer`` got this wrong
for years; the two-process tests in ``tests/losses/test_distributed.py`` check it).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def world_info() -> tuple[int, int]:
    """(rank, world size); (0, 1) when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather in forward; in backward, sum the gradients of every rank's copy and keep the local block."""

    @staticmethod
    def forward(ctx, local: Tensor) -> Tensor:  # type: ignore[override]
        rank, world = world_info()
        ctx.rank, ctx.batch = rank, local.shape[0]
        # Collectives need contiguous buffers; non-contiguous inputs silently lost gradients in older PyTorch.
        local = local.contiguous()
        blocks = [torch.empty_like(local) for _ in range(world)]
        dist.all_gather(blocks, local)
        return torch.cat(blocks, dim=0)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.batch : (ctx.rank + 1) * ctx.batch]


def check_equal_batch_sizes(batch_size: int, device: torch.device) -> None:
    """Raise ValueError when ranks hold different batch sizes (all_gather needs equal blocks)."""
    rank, world = world_info()
    if world == 1:
        return
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([batch_size], dtype=torch.long, device=device))
    found = [int(size.item()) for size in sizes]
    if len(set(found)) != 1:
        raise ValueError(f"all ranks must hold the same batch size to gather features, got {found} (rank {rank})")


def gather_with_grad(local: Tensor) -> Tensor:
    """Concatenate ``local`` (B, ...) from every rank into (B * world, ...), gradients flowing back to every rank."""
    if world_info()[1] == 1:
        return local
    return _GatherWithGrad.apply(local)


def gather_no_grad(local: Tensor) -> Tensor:
    """Concatenate ``local`` from every rank without gradient (labels, ids, targets)."""
    world = world_info()[1]
    if world == 1:
        return local
    local = local.detach().contiguous()
    blocks = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(blocks, local)
    return torch.cat(blocks, dim=0)


def gather_features(local: Tensor, with_grad: bool = True) -> Tensor:
    """Gather features; without ``with_grad`` only the local block keeps its gradient (open_clip's cheaper mode,
    whose gradient is incomplete: prefer ``with_grad=True``)."""
    if with_grad:
        return gather_with_grad(local)
    rank, world = world_info()
    if world == 1:
        return local
    blocks = list(gather_no_grad(local).chunk(world, dim=0))
    blocks[rank] = local
    return torch.cat(blocks, dim=0)
