"""Frozen-prefix text cache: one text-tower training step (forward + backward) with and without ``cache_frozen``.

Both towers are the demo's MiniLM with the top ``--trainable-layers`` trainable, on the reports of a synthetic
MIMIC-CXR-JPG manifest written to a temporary folder. The cached tower is warmed on the same batches first, as after the
first epoch of training, and the memory it holds is printed. Timing is interleaved round by round (best of
``--rounds``) so load from other processes falls on both alike; features of both are compared before timing.

    python benchmarks/text_cache.py                         # batch 64, 1 trainable layer (configs/cxr/demo.yaml)
    python benchmarks/text_cache.py --trainable-layers 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def reports(batch: int, batches: int) -> list[list[str]]:
    from medcl.commands.data import synthesize
    from medcl.data.manifest import read_manifest
    from medcl.data.prepare import prepare

    root = Path(tempfile.mkdtemp(prefix="medcl-text-cache-"))
    synthesize("mimic-cxr", root / "mimic", n_subjects=max(20, batch * batches), seed=0, image_size=32)
    frame = read_manifest(prepare("mimic-cxr", root / "mimic", root / "manifest.csv", progress=False).manifest)
    texts = [t for t in frame["findings"].fillna("").tolist() if t]
    return [texts[i * batch : (i + 1) * batch] for i in range(batches) if len(texts) >= (i + 1) * batch]


def step(encoder: torch.nn.Module, texts: list[str]) -> float:
    started = time.perf_counter()
    encoder(texts).pooled.square().sum().backward()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--trainable-layers", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from medcl.models.text_encoders import HFTextEncoder

    batches = reports(args.batch, args.batches)
    if not batches:
        raise SystemExit("not enough reports for one batch: lower --batch")
    torch.manual_seed(0)
    common = {"max_length": args.max_length, "trainable_layers": args.trainable_layers}
    plain = HFTextEncoder(**common).eval()  # eval: no dropout, so features can be compared exactly
    cached = HFTextEncoder(**common, cache_frozen=True).eval()
    cached.load_state_dict(plain.state_dict())
    for texts in batches:  # warm the cache (the first epoch of training does this) and check equality
        torch.testing.assert_close(cached(texts).pooled, plain(texts).pooled, rtol=1e-4, atol=1e-5)
    times: dict[str, list[float]] = {"plain": [], "cached": []}
    for _ in range(args.rounds):
        for name, encoder in (("plain", plain), ("cached", cached)):
            times[name].append(sum(step(encoder, texts) for texts in batches) / len(batches))
    best = {name: min(values) for name, values in times.items()}
    # The cache's memory cost: what it holds (the timed steps allocate the same activations for the top layers).
    held_mb = sum(t.numel() * t.element_size() for t in cached._prefix_cache.values()) / 2**20
    texts = sum(len(b) for b in batches)
    print(f"MiniLM, {args.trainable_layers} trainable layer(s), batch {args.batch}, {torch.get_num_threads()} threads")
    print("| text tower | s / step (forward + backward) | speed-up |")
    print("|---|---|---|")
    print(f"| plain | {best['plain']:.3f} | 1.00 |")
    print(f"| cache_frozen | {best['cached']:.3f} | {best['plain'] / best['cached']:.2f} |")
    print(f"cache holds {held_mb:.1f} MB for {texts} texts ({held_mb / texts * 1024:.0f} KB per text)")


if __name__ == "__main__":
    main()
