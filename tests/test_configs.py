"""Every shipped config: its datamodule accepts its data section, and its header shows how to write its manifests."""

from __future__ import annotations

import importlib
import inspect
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


def header_commands(text: str) -> list[list[str]]:
    """The `medcl ...` commands of the leading comment block, continuation lines joined, split like a shell."""
    header = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line[1:].strip())
    joined = re.sub(r"\\\s*\n\s*", " ", "\n".join(header))
    return [shlex.split(line) for line in joined.splitlines() if line.startswith("medcl ")]


def init_parameters(cls: type) -> set[str]:
    """Named parameters a datamodule accepts, following ``**kwargs`` up to its base classes."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass.__module__.startswith("lightning"):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_data_section_and_the_commands_that_write_its_manifests(config: Path) -> None:
    text = config.read_text()
    data = yaml.safe_load(text)["data"]
    module, _, name = data["class_path"].rpartition(".")
    init_args = data["init_args"]
    unknown = set(init_args) - init_parameters(getattr(importlib.import_module(module), name))
    assert not unknown, f"{config.name}: {data['class_path']} takes no {sorted(unknown)}"

    commands = header_commands(text)
    # `medcl data prepare` writes a manifest; `medcl data merge` joins prepared ones (several pretraining sets).
    prepares = [c for c in commands if c[:3] in (["medcl", "data", "prepare"], ["medcl", "data", "merge"])]
    synths = {option(c, "--out"): c for c in commands if c[:3] == ["medcl", "data", "synth"]}
    for manifest in [init_args["manifest"], *init_args.get("gaze_manifests", [])]:
        writers = [c for c in prepares if option(c, "--out") == manifest]
        assert writers, f"{config.name}: no `medcl data prepare|merge ... --out {manifest}` in the header"
        if manifest.startswith("demo_out/"):  # a synthetic try-out: the tree it prepares is written by synth
            root = option(writers[0], "--root")
            assert root in synths and synths[root][3] == writers[0][3], f"{config.name}: no synth --out {root}"
