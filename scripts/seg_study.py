"""Few-label segmentation study: scratch vs VoCo-pretrained vs SimCLR-3D-pretrained encoders.

On a synthetic BTCV tree (organs at consistent anatomical positions, per-case jitter, varying spacing and
orientation), with the same network (``unet3d-small`` by default), the same fine-tuning steps and the same
labelled subsets for every arm:

1. pretrain VoCo and SimCLR-3D for ``--pretrain-steps`` on the unlabelled images (train + test splits; the
   validation cases used for scoring are never seen);
2. for each labelled count in ``--labels`` and each seed in ``--seeds``: draw that many labelled training cases
   (``labeled_seed = seed``, identical across arms) and fine-tune each arm for ``--finetune-steps``;
3. score Dice per organ on the held-out validation volumes (sliding window) and write ``results.csv`` and a
   markdown table (mean +- std over seeds, min-max) to ``--out``.

    python scripts/seg_study.py --out demo_out/seg-study --seeds 0 1 2 3 4       # the documented run (docs/volume.md)
    python scripts/seg_study.py --out /tmp/s --labels 1 --seeds 0 --finetune-steps 5 --pretrain-steps 5  # smoke
    python scripts/seg_study.py --table-from a/results.csv b/results.csv         # the table of split runs
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from scipy import stats

from medcl.commands.data import synthesize
from medcl.data.prepare import prepare
from medcl.data.volume import SegmentationDataModule, VoCoDataModule, VolumeViewsDataModule
from medcl.tasks.segmentation import Segmentation
from medcl.tasks.ssl3d import SimCLR3DPretraining
from medcl.tasks.voco import VoCoPretraining

ORGANS = {1: "spleen", 2: "right_kidney", 3: "left_kidney", 6: "liver", 7: "stomach"}
COMMON = {"pixdim": (1.5, 1.5, 2.5), "intensity_range": (-175.0, 250.0), "num_workers": 0}
# Pretraining sees 64 x 64 x 32 volumes (a 2 x 2 VoCo grid of 32^3 bases); fine-tuning trains on whole 48 x 48 x 32
# volumes (one window), which learns far more per CPU-second than 32^3 patches.
PRETRAIN_SIZE, SEG_SIZE = (64, 64, 32), (48, 48, 32)
PRETRAIN_OPTIMIZER = {"lr": 1e-3, "warmup_steps": 10}


class Progress(Callback):
    """A log line every ``every`` steps (the progress bar is off in this batch job)."""

    def __init__(self, every: int = 20) -> None:
        self.every, self.start = every, time.perf_counter()

    def on_train_batch_end(self, trainer: Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step % self.every == 0:
            loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
            logging.info("step %d loss %.4f (%.0f s)", trainer.global_step, loss, time.perf_counter() - self.start)


class LearningCurve(Callback):
    """Held-out mean Dice at every in-training validation, keyed by optimizer step."""

    def __init__(self) -> None:
        self.dice: dict[int, float] = {}

    def on_validation_end(self, trainer: Trainer, module: Any) -> None:
        if "val/dice_mean" in trainer.callback_metrics:
            self.dice[trainer.global_step] = float(trainer.callback_metrics["val/dice_mean"])


def trainer(steps: int, root: Path, val_every: int = 0, callbacks: list[Callback] | None = None) -> Trainer:
    validate = {"val_check_interval": val_every, "check_val_every_n_epoch": None} if val_every else \
        {"limit_val_batches": 0}  # fmt: skip
    return Trainer(
        callbacks=[Progress(), *(callbacks or [])],
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
        accelerator="cpu",
        deterministic=False,
        **validate,
    )


def pretrain(kind: str, manifest: Path, steps: int, model: str, overrides: dict, out: Path) -> Path:
    seed_everything(0, workers=True)
    path = out / f"{kind}.ckpt"
    if path.is_file():
        return path
    if kind == "voco":
        data = VoCoDataModule(
            str(manifest),
            grid=(2, 2),
            base_size=32,
            roi_size=32,
            crop_foreground=None,
            val_split=None,
            batch_size=1,
            spatial_size=PRETRAIN_SIZE,
            **COMMON,
        )
        task = VoCoPretraining(
            model=model, model_overrides=overrides, hidden_dim=256, embed_dim=256, optimizer=PRETRAIN_OPTIMIZER
        )
    else:
        data = VolumeViewsDataModule(
            str(manifest), roi_size=(32, 32, 32), val_split=None, batch_size=3, spatial_size=PRETRAIN_SIZE, **COMMON
        )
        task = SimCLR3DPretraining(model=model, model_overrides=overrides, embed_dim=128, optimizer=PRETRAIN_OPTIMIZER)
    start = time.perf_counter()
    fit = trainer(steps, out)
    fit.fit(task, datamodule=data)
    fit.save_checkpoint(path)
    logging.info("%s pretraining: %d steps in %.0f s", kind, steps, time.perf_counter() - start)
    return path


def finetune(
    arm: str,
    init: Path | None,
    labels: int,
    seed: int,
    manifest: Path,
    steps: int,
    model: str,
    overrides: dict,
    out: Path,
    curve_every: int = 0,
) -> dict[str, Any]:
    seed_everything(seed, workers=True)
    data = SegmentationDataModule(
        str(manifest),
        roi_size=SEG_SIZE,
        num_samples=1,
        num_labeled=labels,
        labeled_seed=seed,
        label_values=list(ORGANS),
        batch_size=1,
        spatial_size=SEG_SIZE,
        **COMMON,
    )
    task = Segmentation(
        model=model,
        model_overrides=overrides,
        num_classes=len(ORGANS) + 1,
        class_names=list(ORGANS.values()),
        init_from=str(init) if init else None,
        roi_size=SEG_SIZE,
        sw_overlap=0.25,
        optimizer={"lr": 3e-3, "warmup_steps": 10},
        compute_hd95=True,
        overlay_every_n_epochs=0,
    )
    start = time.perf_counter()
    curve = LearningCurve()
    fit = trainer(steps, out, curve_every, [curve])
    fit.fit(task, datamodule=data)
    evaluation = Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    metrics = {
        k.removeprefix("val/"): float(v)
        for k, v in evaluation.validate(task, datamodule=data, verbose=False)[0].items()
    }
    row = {"arm": arm, "labels": labels, "seed": seed, "seconds": round(time.perf_counter() - start, 1), **metrics,
           **{f"dice_mean@{step}": dice for step, dice in curve.dice.items() if step < steps}}  # fmt: skip
    logging.info("%s", json.dumps(row))
    return row


def _cell(values: np.ndarray) -> str:
    spread = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.3f} +- {spread:.3f} ({values.min():.3f}-{values.max():.3f}, n={len(values)})"


def table(results: pd.DataFrame) -> str:
    """Markdown: mean +- std (min-max) of mean Dice over seeds, per arm and labelled count; then the same at each
    in-training validation (``dice_mean@<step>`` columns), the learning curve."""
    arms = list(results["arm"].unique())
    lines = ["| labelled volumes | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for labels, part in results.groupby("labels"):
        cells = [_cell(part[part["arm"] == arm]["dice_mean"].to_numpy()) for arm in arms]
        lines.append(f"| {labels} | " + " | ".join(cells) + " |")
    # Paired by seed (same labelled cases, same fine-tuning): each pretrained arm minus scratch.
    scratch = results[results["arm"] == "scratch"].set_index(["labels", "seed"])["dice_mean"]
    for arm in (a for a in arms if a != "scratch"):
        mine = results[results["arm"] == arm].set_index(["labels", "seed"])["dice_mean"]
        deltas = (mine - scratch).dropna()
        for labels, part in deltas.groupby(level=0):
            spread = part.std(ddof=1) if len(part) > 1 else 0.0
            # Paired t-test on the per-seed differences (two-sided), the same as scipy.stats.ttest_rel.
            p_value = float(stats.ttest_1samp(part, 0.0).pvalue) if len(part) > 1 else float("nan")
            lines.append(f"\n{arm} minus scratch, {labels} labelled: mean {part.mean():+.3f} (sd {spread:.3f}), "
                         f"better in {int((part > 0).sum())} of {len(part)} seeds, paired t-test p = {p_value:.2f}, "
                         f"per seed {[round(float(v), 3) for v in part]}")  # fmt: skip
    curve = sorted((c for c in results.columns if c.startswith("dice_mean@")), key=lambda c: int(c.split("@")[1]))
    if curve:
        lines += ["", "Learning curve (held-out mean Dice after N fine-tuning steps):", ""]
        lines += ["| labelled volumes | step | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
        for labels, part in results.groupby("labels"):
            for column in curve:
                cells = [_cell(part[part["arm"] == arm][column].dropna().to_numpy()) for arm in arms]
                lines.append(f"| {labels} | {column.split('@')[1]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_out/seg-study")
    parser.add_argument("--model", default="unet3d-small")
    parser.add_argument("--labels", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=["scratch", "voco", "simclr3d"])
    # 8-16-32-64-128-16: the 4-8-16-32-64-4 U-Net of the first study learned only the liver (docs/volume.md).
    parser.add_argument("--features", type=int, nargs=6, default=[8, 16, 32, 64, 128, 16], help="BasicUNet widths")
    parser.add_argument("--pretrain-steps", type=int, default=1500)
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--curve-every", type=int, default=100, help="also score held-out Dice every N steps")
    parser.add_argument("--n-train", type=int, default=16, help="labelled synthetic cases (a fifth become val)")
    parser.add_argument("--n-test", type=int, default=6, help="unlabelled synthetic cases (pretraining only)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table-from", nargs="+", type=Path, help="only print the table of these results.csv files")
    args = parser.parse_args()
    if args.table_from:
        merged = pd.concat([pd.read_csv(path) for path in args.table_from], ignore_index=True)
        duplicated = merged.duplicated(["arm", "labels", "seed"])
        if duplicated.any():
            raise SystemExit(f"the same (arm, labels, seed) run appears twice:\n{merged[duplicated]}")
        print(table(merged))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "btcv.csv"
    if not manifest.is_file():
        root = synthesize("btcv", out / "btcv", n_train=args.n_train, n_test=args.n_test, shape=(64, 64, 40), seed=0)
        prepare("btcv", root, manifest, progress=False, workers=1)
    overrides = {"features": args.features} if args.model.startswith("unet") else {}
    inits = {"scratch": None}
    if "voco" in args.arms:
        inits["voco"] = pretrain("voco", manifest, args.pretrain_steps, args.model, overrides, out)
    if "simclr3d" in args.arms:
        inits["simclr3d"] = pretrain("simclr3d", manifest, args.pretrain_steps, args.model, overrides, out)
    results_path = out / "results.csv"
    done = pd.read_csv(results_path) if results_path.is_file() else pd.DataFrame()
    rows = done.to_dict("records")
    for labels in args.labels:
        for seed in args.seeds:
            for arm in args.arms:
                if len(done) and ((done["arm"] == arm) & (done["labels"] == labels) & (done["seed"] == seed)).any():
                    continue
                rows.append(
                    finetune(
                        arm,
                        inits[arm],
                        labels,
                        seed,
                        manifest,
                        args.finetune_steps,
                        args.model,
                        overrides,
                        out,
                        args.curve_every,
                    )
                )
                pd.DataFrame(rows).to_csv(results_path, index=False)
    results = pd.DataFrame(rows)
    text = table(results)
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    np.seterr(all="ignore")
    main()
