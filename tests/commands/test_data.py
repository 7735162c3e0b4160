"""`medcl data synth` and its registry: every dataset is written reproducibly and prepares without quarantine."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from medcl.commands import data as data_command
from medcl.commands.data import synthesize
from medcl.data.prepare import available_adapters, prepare
from medcl.data.synthetic import SYNTHESISERS
from medcl.errors import ConfigError

ADAPTERS = Path(importlib.import_module("medcl.data.adapters").__file__).parent
# Tiny trees (seconds each), as `--option KEY=VALUE` pairs: what a user would type.
TINY = {
    "mimic-cxr": ["n_subjects=6", "image_size=32", "workers=1"],
    "egd-cxr": ["n_images=3"],
    "reflacx": ["n_images=3"],
    "chexpert": ["n_patients=3", "n_valid_patients=1", "image_size=[32, 32]"],
    "rsna-pneumonia": ["n_patients=4", "image_size=32"],
    "siim-acr": ["n_patients=3", "image_size=32"],
    "msd": ["n_train=3", "n_test=1", "shape=[16, 16, 12]"],
    "btcv": ["n_train=3", "n_test=1", "shape=[16, 16, 12]"],
    "brats": ["n_cases=3", "shape=[16, 16, 12]"],
    "totalsegmentator": ["n_cases=2", "shape=[16, 16, 12]"],
    "acdc": ["n_train=3", "n_test=1", "shape=[16, 16, 4]", "n_frames=4"],
}


def _synth(dataset: str, out: Path, *extra: str) -> int:
    options = [arg for pair in [*TINY[dataset], *extra] for arg in ("--option", pair)]
    return data_command.main(["synth", dataset, "--out", str(out), *options])


@pytest.fixture(scope="module")
def mimic_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MIMIC-CXR tree the gaze releases annotate."""
    root = tmp_path_factory.mktemp("synth") / "mimic-cxr-jpg"
    assert _synth("mimic-cxr", root) == 0
    return root


def test_registry_has_one_synthesiser_per_adapter_named_like_it() -> None:
    assert sorted(SYNTHESISERS) == available_adapters() == sorted(TINY)
    for name, synthesiser in SYNTHESISERS.items():
        module, _, function = synthesiser.target.partition(":")
        stem = name.replace("-", "_")
        assert module == f"medcl.data.synthetic.{stem}" and (ADAPTERS / f"{stem}.py").is_file()
        assert function == f"generate_{stem}" and callable(synthesiser.load())
    assert {n for n, s in SYNTHESISERS.items() if s.annotates_mimic} == {"egd-cxr", "reflacx"}


def test_synth_help_lists_every_dataset_from_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        data_command.main(["synth", "--help"])
    assert exited.value.code == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.split("datasets:\n")[1].split("\n\n")[0].splitlines()}
    assert listed == set(SYNTHESISERS)
    # commands/data.py keeps no table of its own: the registry is the one list.
    tables = [v for v in vars(data_command).values() if isinstance(v, (dict, set, frozenset)) and "mimic-cxr" in v]
    assert tables == [SYNTHESISERS] and data_command.SYNTHESISERS is SYNTHESISERS


def test_unknown_dataset_and_missing_mimic_root_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no synthetic dataset 'mimic'"):
        synthesize("mimic", tmp_path / "x")
    with pytest.raises(ConfigError, match="mimic_root"):
        synthesize("egd-cxr", tmp_path / "egd", n_images=2)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("dataset", sorted(SYNTHESISERS))
def test_synth_writes_a_reproducible_tree_its_adapter_prepares_cleanly(
    dataset: str, mimic_tree: Path, tmp_path: Path, tree_digest
) -> None:
    """`medcl data synth <dataset> --out <dir>` then `medcl data prepare <dataset> --root <dir>`: the documented
    try-out path works for every dataset, byte-identical for one seed, with nothing quarantined."""
    mimic = [f"mimic_root={mimic_tree}"] if SYNTHESISERS[dataset].annotates_mimic else []
    assert _synth(dataset, tmp_path / "a", *mimic) == 0
    assert _synth(dataset, tmp_path / "b", *mimic) == 0
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    options = {"mimic_root": str(mimic_tree)} if mimic else {}
    result = prepare(dataset, tmp_path / "a", tmp_path / "manifest.csv", workers=1, progress=False, **options)
    assert result.counts["quarantined"] == 0, (tmp_path / "quarantine.csv").read_text()
    assert result.counts["rows"] > 0


def test_synthesize_returns_the_dataset_root(tmp_path: Path) -> None:
    root = synthesize("mimic-cxr", tmp_path / "mimic", n_subjects=3, image_size=16, workers=1)
    assert root == tmp_path / "mimic" and (root / "mimic-cxr-2.0.0-metadata.csv").is_file()
    task = synthesize("msd", tmp_path / "msd", n_train=2, n_test=0, shape=(12, 12, 8), junk=False)
    assert task == tmp_path / "msd" / "Task09_Spleen" and (task / "dataset.json").is_file()
