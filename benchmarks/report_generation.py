"""Report-generation throughput (reports/s): KV cache on/off and beam sizes 1 and 3.

Measures :meth:`medcl.models.report_generator.ReportGenerator.generate` on random images with a fixed number of new
tokens (``min_new_tokens = max_new_tokens``, so every setting decodes the same length and only the decoding strategy
differs). Results go to stdout as a markdown table and, with ``--json``, to a file.

    python benchmarks/report_generation.py                              # CPU demo model (report-gen-demo)
    python benchmarks/report_generation.py --model report-gen-distilgpt2 --device cuda --batch-size 32 --image-size 224
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def measure(model, images, contexts, beams: int, cache: bool, tokens: int, repeats: int) -> float:
    import torch

    def once() -> None:
        model.generate(images, contexts, num_beams=beams, use_cache=cache, max_new_tokens=tokens, min_new_tokens=tokens)
        if images.is_cuda:
            torch.cuda.synchronize()

    once()  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        once()
    return repeats * images.shape[0] / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="report-gen-demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=60, help="new tokens per report")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from medcl.data.text.reports import context_prompt
    from medcl.models import create_model

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model).to(args.device).eval()
    images = torch.rand(args.batch_size, 2, 1, args.image_size, args.image_size, device=args.device)
    contexts = [context_prompt("shortness of breath", "No acute cardiopulmonary process.")] * args.batch_size
    rows = []
    for beams in (1, 3):
        for cache in (True, False):
            rate = measure(model, images, contexts, beams, cache, args.tokens, args.repeats)
            rows.append({"beams": beams, "kv_cache": cache, "reports_per_s": rate})
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU ({args.threads} threads)"
    print(f"{args.model} on {device}, batch {args.batch_size}, 2 views at {args.image_size} px, {args.tokens} tokens")
    print("| beams | KV cache | reports/s |\n|---|---|---|")
    for row in rows:
        print(f"| {row['beams']} | {'on' if row['kv_cache'] else 'off'} | {row['reports_per_s']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "device": device, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
