"""The per-installation pseudonym key: where it lives, how it is created and guarded, and that pseudonyms depend on
it alone."""

from __future__ import annotations

import hashlib
import re
import stat
from pathlib import Path

import pytest

from medcl.data.deid import KEY_FILE_ENV, PseudonymKey, check_key_outside, create_key, default_key_file, load_key
from medcl.data.prepare import prepare
from medcl.errors import ConfigError

MRN = "MRN-0012345"


def test_default_location_honours_the_override_and_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "k" / "site.key"))
    assert default_key_file() == tmp_path / "k" / "site.key"
    monkeypatch.delenv(KEY_FILE_ENV)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert default_key_file() == tmp_path / "xdg" / "medcl" / "pseudonym.key"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_key_file() == tmp_path / "home" / ".config" / "medcl" / "pseudonym.key"


def test_created_once_private_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "config" / "medcl" / "pseudonym.key"
    key, created = create_key(path)
    assert created and key.path == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert re.fullmatch(r"[0-9a-f]{64}\n", path.read_text())  # 256 random bits
    again, created_again = create_key(path)
    assert not created_again and again.secret == key.secret  # an existing key is kept
    assert load_key(path).fingerprint == key.fingerprint
    other, _ = create_key(tmp_path / "other.key")
    assert other.secret != key.secret  # drawn from os.urandom, not a constant
    assert key.secret.hex() not in repr(key) and key.fingerprint in repr(key)


def test_missing_unreadable_or_exposed_keys_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="medcl data key init"):
        load_key(tmp_path / "absent.key")
    exposed, _ = create_key(tmp_path / "exposed.key")
    assert exposed.path is not None
    exposed.path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key(exposed.path)
    garbage = tmp_path / "garbage.key"
    garbage.write_text("not hex\n")
    garbage.chmod(0o600)
    with pytest.raises(ConfigError, match="not hex"):
        load_key(garbage)
    short = tmp_path / "short.key"
    short.write_text("ab" * 16)
    short.chmod(0o600)
    with pytest.raises(ConfigError, match="16 bytes"):
        load_key(short)


def test_pseudonyms_and_uids_depend_on_the_key() -> None:
    key, other = PseudonymKey(bytes(range(32))), PseudonymKey(bytes(range(1, 33)))
    assert key.pseudonym(MRN) == key.pseudonym(f" {MRN} ")  # stable (whitespace is not identity)
    assert key.pseudonym(MRN) != other.pseudonym(MRN) and key.uid("1.2.3.4") != other.uid("1.2.3.4")
    assert key.day_shift(MRN) != other.day_shift(MRN) or key.day_shift("x") != other.day_shift("x")
    pseudonym = key.pseudonym(MRN)
    assert re.fullmatch(r"anon-[0-9a-f]{16}", pseudonym)
    # The attack that recovered every SIIM-ACR PatientID: hash candidate ids without a key (or with a published one).
    digest = pseudonym.removeprefix("anon-")
    for unkeyed in (hashlib.sha256, hashlib.md5, hashlib.sha1, hashlib.blake2b):
        assert digest not in unkeyed(MRN.encode()).hexdigest()
    assert digest not in hashlib.blake2b(MRN.encode(), key=b"medcl-siim", digest_size=8).hexdigest()
    uid = key.uid("1.2.826.0.1.3680043.10.543.7")
    assert re.fullmatch(r"2\.25\.(0|[1-9]\d*)", uid) and len(uid) <= 64
    assert key.uid("1.2.3.4") != key.pseudonym("1.2.3.4")  # one value in two roles: unrelated outputs


def test_key_inside_a_data_tree_is_refused(tmp_path: Path) -> None:
    key, _ = create_key(tmp_path / "data" / ".medcl" / "pseudonym.key")
    with pytest.raises(ConfigError, match="inside"):
        check_key_outside(key, tmp_path / "data")
    check_key_outside(key, tmp_path / "elsewhere")


def test_prepare_of_a_dataset_with_identifiers_needs_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from phi_dicom import write_siim_tree

    root, _ = write_siim_tree(tmp_path / "siim", patients=1, images_per_patient=1)
    monkeypatch.setenv(KEY_FILE_ENV, str(tmp_path / "config" / "pseudonym.key"))
    with pytest.raises(ConfigError, match="medcl data key init"):
        prepare("siim-acr", root, tmp_path / "out" / "m.csv", workers=1, progress=False)
    assert not (tmp_path / "out" / "m.csv").exists()
    create_key(root / "pseudonym.key")
    monkeypatch.setenv(KEY_FILE_ENV, str(root / "pseudonym.key"))
    with pytest.raises(ConfigError, match="inside"):
        prepare("siim-acr", root, tmp_path / "out" / "m.csv", workers=1, progress=False)
