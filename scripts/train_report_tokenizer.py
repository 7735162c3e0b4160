"""Rebuild the packaged ``cxr-bpe-synthetic`` tokenizer from synthetic MIMIC-style reports (no real report text).

python scripts/train_report_tokenizer.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from medcl.commands.data import synthesize
from medcl.data.text.reports import parse_report
from medcl.models.report_generator import OFFLINE_TOKENIZERS, train_report_tokenizer


def main() -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        synthesize("mimic-cxr", tmp, n_subjects=2000, seed=1234, image_size=16, jpg=False, workers=1)
        texts = []
        for path in sorted(Path(tmp, "files").glob("*/*/s*.txt")):
            sections = parse_report(path.read_text())
            texts += [sections[k] for k in ("findings", "impression", "indication") if sections.get(k)]
    return train_report_tokenizer(texts, OFFLINE_TOKENIZERS["cxr-bpe-synthetic"], vocab_size=1024)


if __name__ == "__main__":
    print(main())
