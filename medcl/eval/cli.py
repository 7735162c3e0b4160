"""``medcl eval``: evaluate a checkpoint and log the results to a new MLflow run.

    medcl eval zeroshot  --ckpt <file> --manifest <csv> [--split test]
    medcl eval retrieval --ckpt <file> --manifest <csv> [--split test]
    medcl eval report    --csv <file> --ref-col <c> --gen-col <c>   (medcl.eval.report_cli)

Both run the task's test loop on the split (zero-shot AUROC per class and image<->text Recall@K are computed together;
the subcommand picks which are printed).
"""

from __future__ import annotations

import argparse

PREFIXES = {"zeroshot": ("zeroshot_",), "retrieval": ("i2t_", "t2i_", "chance_")}


def eval_main(argv: list[str]) -> int:
    if argv[:1] == ["report"]:
        from medcl.eval.report_cli import report_main

        return report_main(argv[1:])
    parser = argparse.ArgumentParser(prog="medcl eval", description="Evaluate a checkpoint.")
    parser.add_argument("kind", choices=sorted(PREFIXES))
    parser.add_argument("--ckpt", required=True, help="checkpoint of an image-text task")
    parser.add_argument("--manifest", required=True, help="manifest CSV (medcl data prepare ...)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--image-size", type=int, default=None, help="default: the training config's")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--experiment", default="medcl-eval")
    args = parser.parse_args(argv)

    import torch
    from lightning.pytorch import Trainer

    from medcl.data.cxr import CXRDataModule
    from medcl.tasks import ImageTextPretraining
    from medcl.tracking import MedclMLFlowLogger

    # Our own checkpoints carry hyper-parameters (plain Python objects), hence weights_only=False.
    checkpoint = torch.load(args.ckpt, map_location="cpu", weights_only=False)
    task = ImageTextPretraining.load_from_checkpoint(args.ckpt, map_location="cpu", weights_only=False)
    trained_size = checkpoint.get("datamodule_hyper_parameters", {}).get("image_size", 224)
    image_size = args.image_size or int(trained_size)
    data = CXRDataModule(args.manifest, image_size=image_size, batch_size=args.batch_size, num_workers=0)
    data.setup()
    data.test_dataloader = lambda: data.loader(args.split, train=False)  # evaluate the requested split
    logger = MedclMLFlowLogger(experiment_name=args.experiment, run_name=f"eval-{args.kind}-{args.split}")
    logger.log_hyperparams({"ckpt": args.ckpt, "manifest": args.manifest, "split": args.split, "kind": args.kind})
    trainer = Trainer(accelerator="auto", devices=1, logger=logger, enable_checkpointing=False)
    results = trainer.test(task, datamodule=data, verbose=False)[0]
    for key, value in sorted(results.items()):
        name = key.removeprefix("test/")
        if name.startswith(PREFIXES[args.kind]):
            print(f"{name:<32} {value:.4f}")
    print(f"MLflow run {logger.run_id}")
    return 0
