"""Docs that run: every command shown in README.md and docs/*.md, and every example in `medcl <command> --help`.

Commands live in ```bash blocks (other blocks hold trees and printed output; a command found there fails
`test_commands_live_in_bash_blocks`). Each document's commands run in order in a sandbox folder that sees the
repository's configs/, scripts/, pipelines/, benchmarks/ and docker/:

* quick ones run in full: `medcl data list|synth|prepare|key`, `medcl --help`, `medcl eval report` on an existing
  CSV, ... (a synth is quick when its sizes are small; a prepare when the tree before it was written);
* long ones (training, evaluation of checkpoints, serving, registering, scripts, benchmarks, pipelines) run through
  argument parsing with the command's own parser, LightningCLI's included (config files loaded, overrides
  type-checked), and stop there;
* `make <target>` runs as `make -n`, `pytest` lines are checked for their paths and markers, `curl` lines for the
  service route they call, and programs that are not medcl's (MLflow's UI, container engines, system tools) are
  listed in EXTERNAL with the reason they are not run.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import runpy
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINKED = ("configs", "scripts", "pipelines", "benchmarks", "docker", "tests")
EXTERNAL = {
    "mlflow": "MLflow's own UI and server (medcl's MLflow use is tested in tests/commands and tests/reliability)",
    "docker": "needs a Docker engine (the images are built and run with podman in tests/test_container.py)",
    "podman": "builds and runs container images (tests/test_container.py, marker container)",
    "apt-get": "installs system packages",
    "debootstrap": "builds a base image root file system",
    "tar": "packs a base image for podman",
    "printf": "writes a podman configuration file",
    "cp": "copies an example environment file to edit",
    "export": "sets a shell variable",
    "torchrun": "launches processes on GPU nodes (the medcl command it launches is parsed)",
    "srun": "SLURM launcher (the medcl command it launches is parsed)",
    "pip": "installs packages",
    "python3 -m venv": "creates a virtual environment",
    "python -m monai.bundle": "MONAI's own bundle runner (tests/deploy/test_bundle.py runs an exported bundle with it)",
}
COMMAND_WORDS = {"medcl", "python", "python3", "make", "pytest", "curl", *(k.split()[0] for k in EXTERNAL)}
QUICK_MEDCL = {("--help",), ("--version",), ("data", "list"), ("data", "key")}
# Sizes a synthetic dataset may have for `medcl data synth` to run in full here (seconds, not minutes).
QUICK_SIZES = {"n_subjects": 100, "n_images": 100, "n_patients": 40, "n_train": 10, "n_test": 4, "n_cases": 6,
               "image_size": 256}  # fmt: skip


@dataclass
class Command:
    doc: str
    text: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def fenced_blocks(path: Path) -> list[tuple[str, str]]:
    return re.findall(r"^```(\w*)\n(.*?)^```", path.read_text(), re.S | re.M)


def logical_lines(block: str) -> list[str]:
    return [line.strip() for line in re.sub(r"\\\n\s*", " ", block).splitlines() if line.strip()]


def commands_of(path: Path) -> list[Command]:
    out = []
    for language, block in fenced_blocks(path):
        if language != "bash":
            continue
        for line in logical_lines(block):
            words = shlex.split(line, comments=True)
            if words:
                out.append(Command(path.name, line, words))
    return out


def help_examples() -> list[Command]:
    """The examples `medcl <command> --help` shows, as one pseudo-document."""
    import importlib

    from medcl.commands.lightning import EXAMPLES as LIGHTNING_EXAMPLES

    examples = [e for group in LIGHTNING_EXAMPLES.values() for e in group]
    for name in ("data", "demo", "register", "serve", "export", "sync"):
        examples += importlib.import_module(f"medcl.commands.{name}").EXAMPLES
    return [Command("--help examples", e, shlex.split(e, comments=True)) for e in examples]


# -- how a command is checked ------------------------------------------------------------------------------------


class Parsed(BaseException):
    """Raised once a command's own parser has accepted its arguments."""


@contextlib.contextmanager
def parse_only(monkeypatch):
    """Stop the program right after its outermost `parse_args` (argparse or jsonargparse) succeeds.
    `parse_known_args` alone never stops it: the rest of the arguments goes to a later parser (medcl demo)."""
    import jsonargparse

    depth = [0]

    def stopping(original, stop: bool):
        def parse(self, *args, **kwargs):
            depth[0] += 1
            try:
                result = original(self, *args, **kwargs)
            finally:
                depth[0] -= 1
            if stop and depth[0] == 0:
                raise Parsed
            return result

        return parse

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", stopping(argparse.ArgumentParser.parse_args, True))
        known = argparse.ArgumentParser.parse_known_args
        patch.setattr(argparse.ArgumentParser, "parse_known_args", stopping(known, False))
        patch.setattr(jsonargparse.ArgumentParser, "parse_args", stopping(jsonargparse.ArgumentParser.parse_args, True))
        yield


@contextlib.contextmanager
def stops_at_parsing():
    """The arguments were accepted: the parser finished (or exited 0 itself, as --print_config does)."""
    try:
        yield
    except Parsed:
        return
    except SystemExit as exit:
        assert exit.code in (0, None), f"the parser refused the arguments (exit {exit.code})"
        return
    pytest.fail("the command ran past its argument parser")


def strip_launchers(argv: list[str], env: dict[str, str]) -> list[str]:
    """``A=1 B=2 cmd ...`` -> cmd (A, B recorded); ``torchrun ... -m medcl x`` and ``srun medcl x`` -> medcl x."""
    while argv and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", argv[0]):
        key, _, value = argv.pop(0).partition("=")
        env[key] = value
    if argv and argv[0] == "torchrun" and "-m" in argv:
        return ["medcl", *argv[argv.index("-m") + 2 :]]
    if argv and argv[0] == "srun":
        return argv[1:]
    if argv[:3] == ["python", "-m", "medcl"]:
        return ["medcl", *argv[3:]]
    return argv


def expand(argv: list[str], variables: dict[str, str]) -> list[str]:
    return [re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), word) for word in argv]


def quick_medcl(argv: list[str]) -> bool:
    """Whether a medcl command runs in full: its inputs exist and its work is seconds."""
    if any("<" in w or "$" in w for w in argv):
        return False
    head = tuple(argv[1:3])
    if head[:1] in QUICK_MEDCL or head in QUICK_MEDCL:
        return True
    if head == ("data", "synth"):
        values = [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == "--option"]
        options = dict(value.split("=", 1) for value in values if "=" in value)
        return all(int(re.sub(r"\D", "", v) or 0) <= QUICK_SIZES[k] for k, v in options.items() if k in QUICK_SIZES)
    if head == ("data", "prepare"):
        return Path(argv[argv.index("--root") + 1]).exists()
    if head == ("eval", "report"):
        return Path(argv[argv.index("--csv") + 1]).is_file()
    return False


def check(command: Command, variables: dict[str, str], monkeypatch, capsys) -> str:
    """Run or parse one command in the current (sandbox) folder; returns what was done."""
    from medcl.commands.main import main

    if len(command.argv) == 1 and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", command.argv[0]):
        key, _, value = command.argv[0].partition("=")
        variables[key] = value
        return "variable"
    argv = strip_launchers(expand(list(command.argv), variables), command.env)
    program = argv[0]
    two = " ".join(argv[:3:2]) if len(argv) > 2 else ""
    if program == "medcl":
        if quick_medcl(argv):
            assert main(argv[1:]) == 0, capsys.readouterr().err
            return "ran"
        with parse_only(monkeypatch), stops_at_parsing():
            code = main(argv[1:])
            pytest.fail(f"exit {code}: {capsys.readouterr().err.strip()[-500:]}")
        return "parsed"
    if program in ("python", "python3") and len(argv) > 1 and argv[1].endswith(".py"):
        script = Path(argv[1])
        assert script.is_file(), f"{script} does not exist"
        with parse_only(monkeypatch), stops_at_parsing():
            monkeypatch.setattr(sys, "argv", [str(script), *argv[2:]])
            runpy.run_path(str(script), run_name="__main__")
        return "parsed"
    if program == "make":
        result = subprocess.run(["make", "-n", *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return "make -n"
    if program == "pytest" or argv[1:3] == ["-m", "pytest"]:
        return check_pytest(argv)
    if program == "curl":
        return check_route(argv)
    reason = EXTERNAL.get(" ".join(argv[:3])) or EXTERNAL.get(two) or EXTERNAL.get(Path(program).name)
    assert reason, f"{command.doc}: `{command.text}` is neither medcl's nor listed in EXTERNAL with a reason"
    return "external"


def check_pytest(argv: list[str]) -> str:
    """Test paths exist; markers are registered."""
    import tomllib

    markers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    names = {m.split(":")[0] for m in markers}
    for i, word in enumerate(argv):
        if word.startswith("tests/"):
            assert (REPO / word.split("::")[0]).exists(), word
        if word == "-m" and i + 1 < len(argv) and argv[i + 1] != "pytest":
            used = set(re.findall(r"\w+", argv[i + 1])) - {"not", "and", "or"}
            assert used <= names, used - names
    return "paths checked"


def check_route(argv: list[str]) -> str:
    """The URL a curl line calls is a route of `medcl serve`."""
    from medcl.serve.app import ServeSettings, create_app

    app = create_app(ServeSettings(models=["unused"], token=None, allow_anonymous=True))
    routes = {getattr(r, "path", "") for r in app.routes}
    url = next(w for w in argv if w.startswith("http"))
    assert re.sub(r"^https?://[^/]+", "", url) in routes, url
    return "route checked"


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    for name in LINKED:
        (tmp_path / name).symlink_to(REPO / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MEDCL_SERVE_TOKEN", "a-token-for-the-docs-test-0123456789")
    return tmp_path


@pytest.mark.parametrize("doc", [*DOCS, "--help examples"], ids=lambda d: d if isinstance(d, str) else d.name)
def test_every_documented_command_runs_or_parses(doc, sandbox, monkeypatch, capsys):
    commands = help_examples() if isinstance(doc, str) else commands_of(doc)
    variables: dict[str, str] = {}
    for command in commands:
        try:
            print(f"{check(command, variables, monkeypatch, capsys):>13}  {command.text[:100]}", file=sys.stderr)
        except (AssertionError, pytest.fail.Exception, SystemExit) as err:
            raise AssertionError(f"{command.doc}: `{command.text}`: {err!r}"[:1500]) from None


def test_commands_live_in_bash_blocks():
    """A command in an untagged block would escape the test above (```text marks printed output)."""
    stray = []
    for path in DOCS:
        for language, block in fenced_blocks(path):
            if language in ("bash", "text"):
                continue
            for line in logical_lines(block):
                first = line.split()[0] if line.split() else ""
                if first in COMMAND_WORDS or (first.startswith("/") and first.endswith(("/python", "/pip"))):
                    stray.append(f"{path.name}: {line[:80]}")
    assert stray == []


def test_docs_speak_to_users():
    """No paths of our machines, no internal notes."""
    for path in DOCS:
        text = path.read_text()
        assert "../shared" not in text and "/work/" not in text, path.name
