"""Volume pretraining / fine-tuning throughput and memory: medcl's Lightning tasks vs a plain PyTorch loop over the
same model, loss and optimiser; sliding-window inference time per volume; and slice-wise inference of a 2D network
over a volume, medcl's vs MONAI's SliceInferer.

Phases: ``voco`` (VoCoPretraining step: student + EMA teacher, VoCoLoss), ``seg`` (Segmentation step: DiceCE on
patches) — each as ``lightning`` (Trainer.fit, logger/progress bar/checkpointing off) and ``plain`` (forward,
backward, AdamW step, EMA update written out by hand) — ``sliding`` (sliding-window inference over one whole
volume) and ``slice`` (a 2D ``--slice-model`` over every axial slice of that volume, ``--roi``^2 in-plane windows):
``medcl`` (``Segmentation.predict_logits``, which also serves 2.5D inputs) vs ``monai`` (``SliceInferer``, the
baseline). Batches are made once in memory, so data loading is not measured. The summary prints each pair's time and
peak-memory ratio (medcl / baseline).

Memory: each phase runs in a fresh subprocess; on CPU the peak is the growth of the process's peak resident set
(ru_maxrss) over the resident set before training, on GPU torch.cuda.max_memory_allocated. Time: median seconds
per step over ``--steps`` steps after ``--warmup`` steps, in the same subprocess.

    python benchmarks/volume.py                                               # CPU: unet3d-small, 32^3 crops
    python benchmarks/volume.py --device cuda --model swinunetr-voco --roi 64 --volume 96 96 96 --precision bf16-mixed
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHASES = ("voco/lightning", "voco/plain", "seg/lightning", "seg/plain", "sliding", "slice/medcl", "slice/monai")
PAIRS = (("voco/lightning", "voco/plain"), ("seg/lightning", "seg/plain"), ("slice/medcl", "slice/monai"))


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _batches(kind: str, args: argparse.Namespace, device: torch.device) -> dict[str, torch.Tensor]:
    roi = args.roi
    generator = torch.Generator().manual_seed(0)
    if kind == "voco":
        bases, crops = args.grid * args.grid, 2
        overlap = torch.rand(args.batch, crops, bases, generator=generator)
        batch = {
            "crops": torch.rand(args.batch, crops, 1, roi, roi, roi, generator=generator),
            "bases": torch.rand(args.batch, bases, 1, roi, roi, roi, generator=generator),
            "overlap": overlap / overlap.sum(-1, keepdim=True),
        }
    else:
        batch = {
            "image": torch.rand(args.batch, 1, roi, roi, roi, generator=generator),
            "label": torch.randint(0, 3, (args.batch, 1, roi, roi, roi), generator=generator).float(),
        }
    return {k: v.to(device) for k, v in batch.items()}


def _task(kind: str, args: argparse.Namespace) -> Any:
    from medcl.tasks.segmentation import Segmentation
    from medcl.tasks.voco import VoCoPretraining

    if kind == "voco":
        return VoCoPretraining(model=args.model, hidden_dim=args.head, embed_dim=args.head, teacher_momentum=0.9)
    if kind == "slice":
        return Segmentation(model=args.slice_model, num_classes=3, roi_size=(args.roi,) * 2, overlay_every_n_epochs=0)
    return Segmentation(model=args.model, num_classes=3, roi_size=(args.roi,) * 3, overlay_every_n_epochs=0)


def _autocast(args: argparse.Namespace, device: torch.device):
    dtype = torch.bfloat16 if args.precision.startswith("bf16") else None
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def run_phase(phase: str, args: argparse.Namespace) -> dict[str, Any]:
    """One phase in this process: seconds per step (median), volumes per second, peak memory."""
    from lightning.pytorch import Callback, Trainer

    device = torch.device(args.device)
    torch.manual_seed(0)
    kind, _, mode = phase.partition("/")
    task = _task("seg" if kind == "sliding" else kind, args).to(device)
    base_rss = _rss_mb()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times: list[float] = []
    if kind in ("sliding", "slice"):
        volume = torch.rand(1, 1, *args.volume, device=device)
        task.eval()
        predict = task.predict_logits
        if mode == "monai":
            from monai.inferers import SliceInferer

            inferer = SliceInferer(
                roi_size=(args.roi,) * 2,
                sw_batch_size=task.hparams.sw_batch_size,
                overlap=task.hparams.sw_overlap,
                mode="gaussian",
                spatial_dim=2,
            )
            predict = lambda v: inferer(v, task.network)  # noqa: E731
        for step in range(args.warmup + args.steps):
            start = time.perf_counter()
            with torch.no_grad(), _autocast(args, device):
                predict(volume)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step >= args.warmup:
                times.append(time.perf_counter() - start)
        volumes_per_step = 1
    elif mode == "plain":
        batch = _batches(kind, args, device)
        optimizer = torch.optim.AdamW(task.parameters(), lr=1e-4, weight_decay=1e-5)
        for step in range(args.warmup + args.steps):
            start = time.perf_counter()
            with _autocast(args, device):
                if kind == "voco":
                    loss = task.pretraining_loss(batch)["loss"]
                else:
                    loss = task.loss(task.network(batch["image"]), batch["label"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if kind == "voco":
                task.on_train_batch_end(None, batch, step)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if step >= args.warmup:
                times.append(time.perf_counter() - start)
        volumes_per_step = args.batch
    else:
        batch = {k: v.cpu() for k, v in _batches(kind, args, device).items()}
        data = [dict(batch) for _ in range(args.warmup + args.steps)]

        class Timer(Callback):
            def on_train_batch_start(self, trainer, module, batch, batch_idx):
                self.start = time.perf_counter()

            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if batch_idx >= args.warmup:
                    times.append(time.perf_counter() - self.start)

        loader = torch.utils.data.DataLoader(data, batch_size=None, collate_fn=lambda x: x)
        trainer = Trainer(
            max_steps=args.warmup + args.steps,
            accelerator=device.type,
            devices=1,
            precision=args.precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[Timer()],
            num_sanity_val_steps=0,
            limit_val_batches=0,
        )
        trainer.fit(task, train_dataloaders=loader)
        volumes_per_step = args.batch
    seconds = statistics.median(times)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = max(0.0, _peak_mb() - base_rss)
    return {"phase": phase, "seconds_per_step": seconds, "volumes_per_s": volumes_per_step / seconds, "peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default="unet3d-small")
    parser.add_argument("--roi", type=int, default=32, help="crop / patch side (VoCo crops and seg patches)")
    parser.add_argument("--grid", type=int, default=2, help="VoCo bases per side (grid x grid bases)")
    parser.add_argument("--head", type=int, default=256, help="VoCo head width")
    parser.add_argument("--batch", type=int, default=2, help="volumes per step (seg: patches)")
    parser.add_argument("--volume", type=int, nargs=3, default=[64, 64, 32], help="sliding-window volume size")
    parser.add_argument("--slice-model", default="unet2d-small", help="2D network of the slice phases")
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--phases", nargs="+", default=list(PHASES))
    parser.add_argument("--out", default="benchmarks/out/volume.json")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        Path(args.result).write_text(json.dumps(run_phase(args.worker, args)))
        return
    rows = []
    passthrough = [a for a in sys.argv[1:] if a not in ("--phases", *args.phases)]
    with tempfile.TemporaryDirectory() as tmp:
        for phase in args.phases:
            result = Path(tmp) / f"{phase.replace('/', '_')}.json"
            command = [sys.executable, __file__, *passthrough, "--worker", phase, "--result", str(result)]
            subprocess.run(command, check=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
            rows.append(json.loads(result.read_text()))
    settings = {k: v for k, v in vars(args).items() if k not in ("worker", "result", "out", "phases")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"settings": settings, "results": rows}, indent=2))
    print(f"settings: {settings}")
    print(f"{'phase':<16} {'s/step':>9} {'volumes/s':>10} {'peak MB':>9}")
    for row in rows:
        print(
            f"{row['phase']:<16} {row['seconds_per_step']:>9.3f} {row['volumes_per_s']:>10.2f} {row['peak_mb']:>9.0f}"
        )
    measured = {row["phase"]: row for row in rows}
    for phase, baseline in PAIRS:
        if phase in measured and baseline in measured:
            mine, base = measured[phase], measured[baseline]
            memory = mine["peak_mb"] / base["peak_mb"] if base["peak_mb"] > 0 else float("nan")
            print(f"{phase} / {baseline}: time x{mine['seconds_per_step'] / base['seconds_per_step']:.2f}, "
                  f"peak memory x{memory:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
