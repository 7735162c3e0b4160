"""Report generation on the synthetic CXR benchmark: fine-tuned from the contrastive checkpoint vs from scratch vs a
nearest-neighbour retrieval baseline (copy the report of the most similar training image), over several seeds.

Per seed: (1) contrastive pretraining (ConVIRT/CLIP objective, ``clip-cxr-demo``) on the train split; (2) report
generation fine-tuned from that checkpoint; (3) the same generator from scratch (same steps, same batches);
(4) retrieval: the pretrained image encoder embeds test and train anchor images and each test study gets the report
of its most similar training study. Every method is scored on the patient-disjoint test split with
:func:`medcl.eval.report.score_reports` (pycocoevalcap NLG metrics, CoGaze preprocessing; clinical efficacy from
the rule-based labeler, reported as ``rule_ce_*``).

    medcl data synth mimic-cxr --out study/mimic --option n_subjects=500 --option seed=1 --option image_size=128 \
        --option "split_fractions=[0.75, 0.05, 0.2]"
    medcl data prepare mimic-cxr --root study/mimic --out study/mimic.csv
    python scripts/report_study.py --manifest study/mimic.csv --out study/report --seeds 0 1 2

``results.jsonl`` is appended run by run (an interrupted study resumes); ``table.md`` is the summary (mean ± sd).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

METHODS = ("fine-tuned from contrastive", "from scratch", "retrieval (1-NN)")
SHOWN = ("BLEU_1", "BLEU_4", "METEOR", "ROUGE_L", "CIDEr", "rule_ce_14_micro_f1", "rule_ce_5_micro_f1",
         "rule_ce_14_macro_f1", "prompt_ce_14_micro_f1")  # fmt: skip
# CPU-sized generator: narrow ResNet-10 backbone (as the contrastive demo), 2-layer MiniLM context, 2-layer GPT-2,
# with PromptMRG's diagnosis prompt (--no-finding-prompt for the plain generator).
GENERATOR = {
    "backbone_overrides": {"text": {"num_hidden_layers": 2, "max_length": 64, "trainable_layers": 1}},
    "decoder": {"config_overrides": {"n_layer": 2, "n_embd": 128, "n_head": 4, "n_positions": 256}},
    "finding_prompt": True,
}


def _trainer(args: argparse.Namespace, epochs: int, root: Path) -> Any:
    from lightning.pytorch import Trainer

    return Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                   enable_model_summary=False, enable_progress_bar=args.progress, default_root_dir=str(root),
                   gradient_clip_val=1.0, num_sanity_val_steps=0, limit_val_batches=0)  # fmt: skip


def pretrain(args: argparse.Namespace, seed: int, root: Path) -> Path:
    """Contrastive pretraining; returns the checkpoint path (reused when it exists)."""
    from lightning.pytorch import seed_everything

    from medcl.data.cxr import CXRDataModule
    from medcl.tasks import ImageTextPretraining

    path = root / f"contrastive-seed{seed}.ckpt"
    if path.is_file():
        return path
    seed_everything(seed, workers=True)
    data = CXRDataModule(args.manifest, image_size=args.image_size, batch_size=32, num_workers=0, cache="memory")
    optimizer = {"lr": 5e-4, "warmup_steps": 10, "lr_multipliers": {"model.text_encoder": 0.1}}
    task = ImageTextPretraining("clip-cxr-demo", model_overrides={"text": GENERATOR["backbone_overrides"]["text"]},
                                optimizer=optimizer)  # fmt: skip
    trainer = _trainer(args, args.pretrain_epochs, root)
    trainer.fit(task, datamodule=data)
    trainer.save_checkpoint(path)
    return path


def report_data(args: argparse.Namespace) -> Any:
    from medcl.data.report import ReportDataModule

    data = ReportDataModule(args.manifest, image_size=args.image_size, batch_size=16, num_workers=0, max_views=2)
    data.setup()
    return data


def generate(args: argparse.Namespace, seed: int, checkpoint: Path | None, root: Path
             ) -> tuple[list[str], list[str], dict[str, float]]:  # fmt: skip
    """Fine-tune a generator (from ``checkpoint`` or scratch); the test references, generations and prompt scores."""
    from lightning.pytorch import seed_everything

    from medcl.tasks.report import ReportGeneration

    seed_everything(seed, workers=True)
    overrides = {**GENERATOR, "finding_prompt": args.finding_prompt,
                 **({"checkpoint": str(checkpoint)} if checkpoint else {})}  # fmt: skip
    task = ReportGeneration("report-gen-demo", model_overrides=overrides, optimizer={"lr": args.lr},
                            num_beams=args.beams, max_new_tokens=80, val_max_reports=0,
                            output_dir=str(root))  # fmt: skip
    data = report_data(args)
    trainer = _trainer(args, args.epochs, root)
    trainer.fit(task, datamodule=data)
    results = trainer.test(task, datamodule=data, verbose=False)[0]
    import pandas as pd

    frame = pd.read_csv(root / "generated_reports_test.csv", keep_default_na=False)
    prompt = {k.removeprefix("test/"): float(v) for k, v in results.items() if k.startswith("test/prompt_")}
    return frame["reference"].tolist(), frame["generated"].tolist(), prompt


def retrieve(args: argparse.Namespace, checkpoint: Path) -> tuple[list[str], list[str]]:
    """1-NN retrieval with the contrastive image encoder: the most similar training study's report."""
    import torch

    from medcl.tasks.checkpoint import load_task

    task = load_task(checkpoint).task.eval()
    data = report_data(args)

    @torch.no_grad()
    def embed(split: str) -> tuple[torch.Tensor, list[str]]:
        vectors, texts = [], []
        for batch in data.loader(split, train=False):
            vectors.append(task.model.encode_image(batch["images"][:, 0]))
            texts += batch["text"]
        return torch.cat(vectors), texts

    train_vectors, train_texts = embed("train")
    test_vectors, test_texts = embed("test")
    nearest = (test_vectors @ train_vectors.T).argmax(dim=1)
    return test_texts, [train_texts[i] for i in nearest.tolist()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--beams", type=int, default=3)
    parser.add_argument(
        "--no-finding-prompt",
        dest="finding_prompt",
        action="store_false",
        help="the plain generator, without the diagnosis prompt",
    )
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="subset to run")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from medcl.eval.report import score_reports

    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.jsonl"
    done = {(r["method"], r["seed"]) for r in map(json.loads, results_path.open())} if results_path.exists() else set()
    for seed in args.seeds:
        root = args.out / f"seed{seed}"
        root.mkdir(exist_ok=True)
        checkpoint = pretrain(args, seed, root)
        for method in args.methods:
            if (method, seed) in done:
                continue
            started = time.perf_counter()
            prompt: dict[str, float] = {}
            if method == METHODS[2]:
                references, generated = retrieve(args, checkpoint)
            else:
                run_root = root / method.split()[0]
                references, generated, prompt = generate(args, seed, checkpoint if method == METHODS[0] else None,
                                                         run_root)  # fmt: skip
            scores = score_reports(references, generated)
            row = {"method": method, "seed": seed, "n": len(references), "seconds": time.perf_counter() - started,
                   "finding_prompt": args.finding_prompt and method != METHODS[2],
                   **text_statistics(generated, references),
                   **{k: v for k, v in scores.corpus.items() if "_f1_" not in k}, **prompt}  # fmt: skip
            with results_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row))
    write_table(results_path, args.out / "table.md")


def text_statistics(generated: list[str], references: list[str]) -> dict[str, float]:
    """Collapse and length checks: distinct reports written, mean length in words of generated and references."""
    words = {name: statistics.mean(len(t.split()) for t in texts) if texts else 0.0
             for name, texts in (("mean_words", generated), ("mean_words_reference", references))}  # fmt: skip
    return {"distinct_reports": len(set(generated)), **words}


def write_table(results_path: Path, out: Path) -> None:
    rows = [json.loads(line) for line in results_path.open()]
    lines = ["| method | seeds | " + " | ".join(SHOWN) + " |", "|---" * (len(SHOWN) + 2) + "|"]
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        cells = []
        for name in SHOWN:
            values = [r[name] for r in mine if name in r]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f}" if values else "n/a")
        lines.append(f"| {method} | {len(mine)} | " + " | ".join(cells) + " |")
    # The acceptance question, paired by seed: does each generator beat retrieval on clinical efficacy?
    by_key = {(r["method"], r["seed"]): r for r in rows}
    ce = "rule_ce_14_micro_f1"
    for method in METHODS[:2]:
        paired = [(seed, r, by_key.get((METHODS[2], seed))) for (m, seed), r in sorted(by_key.items()) if m == method]
        deltas = {seed: round(r[ce] - baseline[ce], 3) for seed, r, baseline in paired if baseline is not None}
        if deltas:
            lines.append(f"\n{method} minus retrieval, rule_ce_14_micro_f1 per seed: {deltas}")
    out.write_text("\n".join(lines) + "\n")
    print(out.read_text())


if __name__ == "__main__":
    main()
