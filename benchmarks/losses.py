"""ClipLoss forward + backward: naive full-matrix loss vs ClipLoss default vs ClipLoss memory-bounded (chunked).

Memory: every mode runs one step in a fresh subprocess; on CPU its peak is the growth of the process's peak resident
set (ru_maxrss) over its resident set just before the step, so allocator caches of one mode never hide another's; on
GPU it is torch.cuda.max_memory_allocated over the step. Results of every mode (loss and all gradients) are compared
with the naive one. Time: the modes then run in one process, interleaved round by round (best of ``--repeats``), so
load from other processes on a shared machine falls on all modes alike.

    python benchmarks/losses.py                       # CPU, N = 16384
    python benchmarks/losses.py --device cuda         # GPU, N = 65536
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from medcl.losses import ClipLoss

TEMPERATURE = 0.07
MODES = ("naive", "default", "chunked")


def naive_clip_loss(images: torch.Tensor, texts: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """The textbook implementation: the full N x N logit matrix, cross-entropy over its rows and its columns."""
    images, texts = F.normalize(images, dim=-1), F.normalize(texts, dim=-1)
    logits = logit_scale.exp() * images @ texts.T
    labels = torch.arange(images.shape[0], device=images.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def make_step(mode: str, chunk_size: int):
    if mode == "naive":
        logit_scale = torch.tensor(torch.log(torch.tensor(1 / TEMPERATURE)).item(), requires_grad=True)
        return (lambda i, t: naive_clip_loss(i, t, logit_scale)), logit_scale
    loss_fn = ClipLoss(temperature=TEMPERATURE, chunk_size=chunk_size if mode == "chunked" else None)
    return loss_fn, loss_fn.logit_scale


def make_inputs(n: int, dim: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(n, dim, generator=generator).to(device).requires_grad_()
    texts = torch.randn(n, dim, generator=generator).to(device).requires_grad_()
    return images, texts


def forward_backward(step, logit_scale, images, texts) -> torch.Tensor:
    for tensor in (images, texts, logit_scale):
        tensor.grad = None
    loss = step(images, texts)
    loss.backward()
    return loss.detach()


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_mode(mode: str, n: int, dim: int, chunk_size: int, device: str, result_path: str) -> dict:
    """One step of one mode in this (fresh) process: its peak memory; loss and gradients saved to ``result_path``."""
    step, logit_scale = make_step(mode, chunk_size)
    logit_scale.data = logit_scale.data.to(device)
    images, texts = make_inputs(n, dim, device)
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    else:
        baseline = current_rss_bytes()
    loss = forward_backward(step, logit_scale, images, texts)
    if device == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - baseline
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline
    torch.save(
        {"loss": loss.cpu(), "images": images.grad.cpu(), "texts": texts.grad.cpu(), "scale": logit_scale.grad.cpu()},
        result_path,
    )
    return {"mode": mode, "peak_bytes": peak, "loss": float(loss)}


def time_modes(modes: list[str], n: int, dim: int, chunk_size: int, repeats: int, device: str) -> dict[str, float]:
    """Best seconds per forward + backward step, the modes interleaved within each round (after one warm-up)."""
    images, texts = make_inputs(n, dim, device)
    steps = {}
    for mode in modes:
        step, logit_scale = make_step(mode, chunk_size)
        logit_scale.data = logit_scale.data.to(device)
        steps[mode] = (step, logit_scale)
        forward_backward(step, logit_scale, images, texts)
    best = dict.fromkeys(modes, float("inf"))
    for _ in range(repeats):
        for mode in modes:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            forward_backward(*steps[mode], images, texts)
            if device == "cuda":
                torch.cuda.synchronize()
            best[mode] = min(best[mode], time.perf_counter() - start)
    return best


def compare(reference: dict, other: dict) -> float:
    """Largest relative difference over loss and gradients (max |a - b| / max |a| per tensor)."""
    worst = 0.0
    for key, expected in reference.items():
        scale = float(expected.abs().max()) or 1.0
        worst = max(worst, float((other[key] - expected).abs().max()) / scale)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--n", type=int, default=None, help="global batch (default 16384 on CPU, 65536 on GPU)")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n = args.n or (65536 if args.device == "cuda" else 16384)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        summary = run_mode(args.worker, n, args.dim, args.chunk_size, args.device, args.result)
        print(json.dumps(summary))
        return

    modes = args.modes.split(",")
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for mode in modes:
            path = os.path.join(folder, f"{mode}.pt")
            command = [
                sys.executable,
                __file__,
                "--worker",
                mode,
                "--result",
                path,
                "--device",
                args.device,
                "--n",
                str(n),
                "--dim",
                str(args.dim),
                "--chunk-size",
                str(args.chunk_size),
            ]
            if args.threads:
                command += ["--threads", str(args.threads)]
            completed = subprocess.run(command, capture_output=True, text=True, check=False)
            if completed.returncode != 0:
                raise SystemExit(f"mode {mode} failed (a naive N x N step may not fit in memory):\n{completed.stderr}")
            results[mode] = json.loads(completed.stdout.strip().splitlines()[-1])
            results[mode]["tensors"] = torch.load(path, weights_only=True)
    for mode, seconds in time_modes(modes, n, args.dim, args.chunk_size, args.repeats, args.device).items():
        results[mode]["best_seconds"] = seconds

    print(
        f"ClipLoss forward+backward, N={n}, D={args.dim}, device={args.device}, chunk_size={args.chunk_size}, "
        f"threads={args.threads or torch.get_num_threads()}, time: best of {args.repeats} interleaved rounds"
    )
    print(f"{'mode':<9}{'peak MiB':>12}{'seconds':>10}{'loss':>14}{'max rel diff vs naive':>24}")
    reference = results.get("naive")
    for mode in modes:
        row = results[mode]
        diff = compare(reference["tensors"], row["tensors"]) if reference else float("nan")
        print(
            f"{mode:<9}{row['peak_bytes'] / 2**20:>12.1f}{row['best_seconds']:>10.3f}{row['loss']:>14.6f}{diff:>24.2e}"
        )
    if reference:
        for mode in modes:
            if mode == "naive":
                continue
            memory = results[mode]["peak_bytes"] / reference["peak_bytes"]
            speed = results[mode]["best_seconds"] / reference["best_seconds"]
            print(f"{mode} / naive: peak memory ratio {memory:.3f}, time ratio {speed:.3f}")


if __name__ == "__main__":
    main()
