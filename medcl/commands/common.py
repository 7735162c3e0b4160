"""What every ``medcl`` subcommand shares: its parser with a description and examples that work as written."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def command_parser(command: str, description: str, examples: Sequence[str]) -> argparse.ArgumentParser:
    """The parser of ``medcl <command>``; ``examples`` are shown by ``--help`` (tests run them)."""
    return argparse.ArgumentParser(
        prog=f"medcl {command}",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n" + "\n".join(f"  {example}" for example in examples),
    )
