"""CoGaze ablation on the synthetic CXR benchmark: full vs no-gaze vs no-context vs ConVIRT, same data/steps/seeds.

Context and gaze carry real signal there: indications are drawn from the findings
(medcl.data.synthetic.mimic_cxr_studies) and gaze fixations fall on the drawn lesions while each finding is dictated
(medcl.data.synthetic.gaze_reading). Every variant trains the same CPU-sized CoGaze model for the same number of
steps on the same batches (one seed per repeat), then is tested on the held-out, patient-disjoint test split:
zero-shot AUROC (prompt ensembles), image->text Recall@K and attention-vs-gaze agreement on the test images' gaze maps
(never seen in training).

    # data (about 5 min on 2 CPU cores)
    medcl data synth mimic-cxr --out abl/mimic --option n_subjects=400 --option seed=1 --option image_size=128 \\
        --option "original_size=[1024, 1024]" --option "split_fractions=[0.7, 0.1, 0.2]"
    medcl data prepare mimic-cxr --root abl/mimic --out abl/mimic.csv
    medcl data synth egd-cxr --out abl/egd --option mimic_root=abl/mimic --option n_images=500 --option seed=1
    medcl data prepare egd-cxr --root abl/egd --out abl/egd.csv --option mimic_root=abl/mimic
    # runs (results.jsonl is appended run by run, so an interrupted study resumes) and the markdown table
    python scripts/cxr_ablation.py --manifest abl/mimic.csv --gaze-manifest abl/egd.csv --out abl/study
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

VARIANTS: dict[str, dict[str, Any]] = {
    "CoGaze (full)": {},
    "no gaze": {"gaze_weight": 0.0},
    "no context": {"model_overrides": {"use_context": False}},
    "ConVIRT": {
        "gaze_weight": 0.0,
        "image_disease_weight": 0.0,
        "text_disease_weight": 0.0,
        "model_overrides": {"use_context": False, "num_labels": 0},
    },
}
METRICS = ("zeroshot_auroc_mean", "gaze_auc", "gaze_hit", "gaze_kl", "i2t_R5", "t2i_R5")
# CPU-sized model shared by every variant: narrow ResNet-10 (4x4 patch grid at 128 px), first 2 MiniLM layers.
SMALL_MODEL = {"text": {"num_hidden_layers": 2, "max_length": 48, "trainable_layers": 0}}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def run_one(args: argparse.Namespace, variant: str, seed: int, data: Any) -> dict[str, Any]:
    from lightning.pytorch import Trainer, seed_everything

    from medcl.tasks.cogaze import CoGazePretraining

    seed_everything(seed, workers=True)
    options = merge({"model_overrides": SMALL_MODEL}, VARIANTS[variant])
    task = CoGazePretraining("cogaze-small", optimizer={"lr": args.lr, "warmup_steps": 10}, figures=False, **options)
    trainer = Trainer(
        max_steps=args.steps,
        max_time={"minutes": args.max_minutes},
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        deterministic=False,
    )
    started = time.perf_counter()
    trainer.fit(task, datamodule=data)
    train_s = time.perf_counter() - started
    results = trainer.test(task, datamodule=data, verbose=False)[0]
    row = {"variant": variant, "seed": seed, "steps": trainer.global_step, "train_s": round(train_s, 1)}
    row.update({k.removeprefix("test/"): float(v) for k, v in results.items()})
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: mean ± sample std over seeds for each variant."""
    lines = [
        "| variant | seeds | steps | " + " | ".join(METRICS) + " |",
        "|---|---|---|" + "---|" * len(METRICS),
    ]
    for variant in VARIANTS:
        mine = [r for r in rows if r["variant"] == variant]
        if not mine:
            continue
        cells = []
        for metric in METRICS:
            values = [r[metric] for r in mine if metric in r]
            if not values:
                cells.append("n/a")
            elif len(values) == 1:
                cells.append(f"{values[0]:.3f}")
            else:
                cells.append(f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}")
        steps = sorted({r["steps"] for r in mine})
        lines.append(f"| {variant} | {len(mine)} | {'/'.join(map(str, steps))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--gaze-manifest", action="append", default=[])
    parser.add_argument("--out", required=True, help="folder for results.jsonl and table.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--max-minutes", type=float, default=8.0, help="time box per run (steps may fall short)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from medcl.data.cxr import CXRDataModule

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    rows = [json.loads(line) for line in results_path.read_text().splitlines()] if results_path.is_file() else []
    done = {(r["variant"], r["seed"]) for r in rows}
    data = CXRDataModule(
        args.manifest,
        image_size=args.image_size,
        batch_size=args.batch_size,
        num_workers=0,
        gaze_manifests=args.gaze_manifest,
    )
    data.setup()
    cached = {}
    build = data.dataset
    data.dataset = lambda split, train: cached.setdefault((split, train), build(split, train))  # cache once
    for seed in args.seeds:
        for variant in args.variants:
            if (variant, seed) in done:
                continue
            row = run_one(args, variant, seed, data)
            rows.append(row)
            with results_path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            print(json.dumps({k: row.get(k) for k in ("variant", "seed", "steps", "train_s", *METRICS)}), flush=True)
            (out / "table.md").write_text(table(rows) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
