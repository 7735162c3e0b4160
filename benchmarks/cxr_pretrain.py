"""CoGaze pretraining throughput: the Lightning task against a plain PyTorch loop over the same model and batch.

Both paths run the identical objective (``CoGazePretraining._loss``: model forward, contrast, gaze and disease terms)
on one fixed in-memory batch, so data loading is excluded and the ratio shows framework overhead only. Reported per
config: samples/s of each path (median over interleaved rounds), their ratio, and peak memory (CUDA: max allocated
per phase; CPU: the process's peak RSS, which is cumulative). On a GPU, ``--precision`` adds bf16-mixed vs fp32 and
model FLOP utilisation (FLOPs of one training step counted by ``torch.utils.flop_counter``, divided by time and by
``--peak-tflops``).

    python benchmarks/cxr_pretrain.py                              # demo config, CPU, fp32
    python benchmarks/cxr_pretrain.py --configs demo paper --paper-batch 2 --steps 3
    python benchmarks/cxr_pretrain.py --configs demo paper --precision 32 bf16 --steps 20   # on a GPU

The paper config uses random weights when RAD-DINO / CXR-BERT are not available locally (same shapes).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from typing import Any

import torch

CONFIGS: dict[str, dict[str, Any]] = {
    "demo": {"model": "cogaze-small", "image_size": 128, "batch": 32, "overrides": {}},
    "paper": {
        "model": "cogaze",
        "image_size": 518,
        "batch": 80,
        "overrides": {
            "image": {"pretrained": False},
            "text": {
                "name_or_path": "minilm",
                "pretrained": False,
                "max_length": 128,
                "config_overrides": {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072},
            },
        },
    },
}
SENTENCES = ["There is a left pleural effusion.", "The heart is enlarged.", "There is a nodule in the right lung."]


def make_batch(batch: int, size: int, device: torch.device) -> dict[str, Any]:
    """A CXRDataModule-shaped batch: half the items have context, a third have gaze with three sentences."""
    generator = torch.Generator().manual_seed(0)
    gaze = torch.arange(batch) % 3 == 0
    report = " ".join(SENTENCES) + " No pneumothorax. The mediastinal contours are normal."
    return {
        "image": torch.rand(batch, 1, size, size, generator=generator).to(device),
        "text": [report] * batch,
        "context": ["[INDICATION] ___ year old with dyspnea. Evaluate for effusion. [HISTORY] heart failure"] * batch,
        "has_context": (torch.arange(batch) % 2 == 0).to(device),
        "view": torch.zeros(batch, dtype=torch.long, device=device),
        "group_id": torch.arange(batch, device=device) // 2,
        "labels": (torch.rand(batch, 14, generator=generator) < 0.3).float().to(device),
        "gaze_present": gaze.to(device),
        "gaze_text": [" ".join(SENTENCES) if g else "" for g in gaze.tolist()],
        "gaze": torch.rand(batch, 1, size, size, generator=generator).to(device) * gaze[:, None, None, None].to(device),
        "gaze_sentences": torch.rand(batch, 3, size, size, generator=generator).to(device),
        "gaze_sentence_mask": gaze[:, None].expand(-1, 3).clone().to(device),
        "gaze_sentence_text": [list(SENTENCES) if g else [] for g in gaze.tolist()],
    }


def build_task(config: dict[str, Any]) -> Any:
    from medcl.tasks.cogaze import CoGazePretraining

    torch.manual_seed(0)
    return CoGazePretraining(config["model"], model_overrides=config["overrides"], disease_counts=[50] * 14,
                             optimizer={"lr": 1e-4})  # fmt: skip


def autocast(device: torch.device, precision: str) -> Any:
    enabled = precision == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def plain_loop(config: dict[str, Any], batch: dict[str, Any], steps: int, warmup: int, device, precision: str):
    """samples/s of a hand-written loop: forward, backward, AdamW step, zero_grad."""
    task = build_task(config).to(device).train()
    optimizer = torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-4)
    started = 0.0
    for step in range(steps + warmup):
        if step == warmup:
            synchronize(device)
            started = time.perf_counter()
        with autocast(device, precision):
            loss = task._loss(batch)[0]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    synchronize(device)
    return steps * len(batch["text"]) / (time.perf_counter() - started)


def lightning_loop(config: dict[str, Any], batch: dict[str, Any], steps: int, warmup: int, device, precision: str):
    """samples/s of ``Trainer.fit`` on the same task and batch (timed from the first post-warm-up step)."""
    from lightning.pytorch import Callback, Trainer
    from torch.utils.data import DataLoader

    class Timer(Callback):
        started = ended = 0.0

        def on_train_batch_start(self, trainer, module, batch_, index) -> None:
            if index == warmup:
                synchronize(device)
                self.started = time.perf_counter()

        def on_train_end(self, trainer, module) -> None:
            synchronize(device)
            self.ended = time.perf_counter()

    timer = Timer()
    trainer = Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed" if precision == "bf16" else "32-true",
        max_steps=steps + warmup,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    loader = DataLoader([batch] * (steps + warmup), batch_size=None, collate_fn=lambda item: item)
    task = build_task(config)
    task.configure_optimizers = lambda: torch.optim.AdamW([p for p in task.parameters() if p.requires_grad], lr=1e-4)
    trainer.fit(task, train_dataloaders=loader)
    return steps * len(batch["text"]) / (timer.ended - timer.started)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_flops(config: dict[str, Any], batch: dict[str, Any], device: torch.device) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    task = build_task(config).to(device).train()
    with FlopCounterMode(display=False) as counter:
        task._loss(batch)[0].backward()
    return counter.get_total_flops()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["demo"], choices=list(CONFIGS))
    parser.add_argument("--precision", nargs="+", default=["32"], choices=["32", "bf16"])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved plain/Lightning rounds (median)")
    parser.add_argument("--demo-batch", type=int, default=None)
    parser.add_argument("--paper-batch", type=int, default=None, help="CPU: use 2 (the paper's 80 takes hours)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU dense bf16 peak for MFU (H100/H200)")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for name in args.configs:
        config = dict(CONFIGS[name])
        config["batch"] = getattr(args, f"{name}_batch") or config["batch"]
        batch = make_batch(config["batch"], config["image_size"], device)
        flops = step_flops(config, batch, device) if device.type == "cuda" else None
        for precision in args.precision:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            plain, lightning = [], []
            for _ in range(args.rounds):
                plain.append(plain_loop(config, batch, args.steps, args.warmup, device, precision))
                plain_memory = peak_memory_mb(device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                lightning.append(lightning_loop(config, batch, args.steps, args.warmup, device, precision))
                lightning_memory = peak_memory_mb(device)
            row = {
                "config": name,
                "model": config["model"],
                "image_size": config["image_size"],
                "batch": config["batch"],
                "precision": precision,
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "plain_samples_s": statistics.median(plain),
                "lightning_samples_s": statistics.median(lightning),
                "plain_peak_mb": plain_memory,
                "lightning_peak_mb": lightning_memory,
            }
            row["lightning_over_plain"] = row["lightning_samples_s"] / row["plain_samples_s"]
            if flops:
                row["tflop_per_step"] = flops / 1e12
                achieved = flops * row["lightning_samples_s"] / config["batch"]
                row["mfu"] = achieved / (args.peak_tflops * 1e12)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print("\n| config | batch | precision | plain samples/s | Lightning samples/s | ratio | peak MB (plain / L) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} ({r['model']}, {r['image_size']} px) | {r['batch']} | {r['precision']} | "
              f"{r['plain_samples_s']:.2f} | {r['lightning_samples_s']:.2f} | {r['lightning_over_plain']:.3f} | "
              f"{r['plain_peak_mb']:.0f} / {r['lightning_peak_mb']:.0f} |")  # fmt: skip
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
