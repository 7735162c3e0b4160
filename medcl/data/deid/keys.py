"""The per-installation pseudonym key and the keyed pseudonyms, UIDs and date shifts derived from it.

Pseudonyms are HMAC-SHA256 under a 256-bit secret drawn from ``os.urandom`` when the key is created. Without the
key they cannot be recomputed: enumerating every possible MRN does not help, because each guess must be hashed
under a key that is itself one of 2**256 values. The key is never defaulted (a published default key is how an
earlier SIIM-ACR manifest gave back every PatientID) and never written into data trees, manifests or logs: only
its fingerprint (an HMAC of a fixed string, which reveals nothing about it) is.

Where it lives: ``$MEDCL_PSEUDONYM_KEY_FILE`` if set, else ``$XDG_CONFIG_HOME/medcl/pseudonym.key`` (default
``~/.config/medcl/pseudonym.key``), a file of mode 0600 holding 64 hex digits. ``medcl data key init`` creates it;
nothing creates it behind the user's back, because a second key made silently (another machine preparing one shard,
a lost config folder) would give the same patient two pseudonyms and mix patients across splits.

Derived values (each HMAC input is prefixed with its purpose, so one value used in two roles gets unrelated outputs):

* pseudonym: ``anon-`` + the first 16 hex digits (64 bits) of the HMAC: among a million patients the chance that
  two share one is about 3e-8.
* UID: ``2.25.`` + the first 128 bits as a decimal integer (at most 44 characters, a valid UID under PS3.5 B.2).
* date shift: 1 to 3650 days back, one per patient (Retain Longitudinal Temporal Information, Modified Dates).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from medcl.errors import ConfigError

KEY_FILE_ENV = "MEDCL_PSEUDONYM_KEY_FILE"
KEY_BYTES = 32
PSEUDONYM_HEX_DIGITS = 16
MAX_DAY_SHIFT = 3650
CREATE_HINT = "create one with `medcl data key init` (once per installation; copy the same file to every machine "
CREATE_HINT += "that prepares shards of the same dataset)"


def default_key_file() -> Path:
    """Where the key is looked for: ``$MEDCL_PSEUDONYM_KEY_FILE``, else the user's config folder."""
    override = os.environ.get(KEY_FILE_ENV, "").strip()
    if override:
        return Path(override).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME", "").strip() or Path.home() / ".config"
    return Path(config).expanduser() / "medcl" / "pseudonym.key"


@dataclass(frozen=True, repr=False)
class PseudonymKey:
    """A secret key; its ``repr`` shows only the fingerprint, so tracebacks and logs never print the secret."""

    secret: bytes
    path: Path | None = None

    def __post_init__(self) -> None:
        if len(self.secret) < KEY_BYTES:
            raise ConfigError(f"a pseudonym key needs at least {KEY_BYTES} random bytes, got {len(self.secret)}")

    def __repr__(self) -> str:
        return f"PseudonymKey(fingerprint={self.fingerprint!r}, path={str(self.path) if self.path else None!r})"

    def _digest(self, purpose: str, value: str) -> bytes:
        message = purpose.encode("ascii") + b"\0" + str(value).strip().encode("utf-8", "surrogatepass")
        return hmac.new(self.secret, message, hashlib.sha256).digest()

    @property
    def fingerprint(self) -> str:
        """12 hex digits that tell keys apart (recorded in summaries so shards made with different keys are caught)."""
        return self._digest("fingerprint", "medcl").hex()[:12]

    def pseudonym(self, identifier: str, *, prefix: str = "anon-") -> str:
        """A stable pseudonym for a patient (or other) identifier."""
        return prefix + self._digest("identifier", identifier).hex()[:PSEUDONYM_HEX_DIGITS]

    def uid(self, uid: str) -> str:
        """A new UID for ``uid``: the same input gives the same UID in every file, run and shard with this key."""
        return f"2.25.{int.from_bytes(self._digest('uid', uid)[:16], 'big')}"

    def day_shift(self, patient: str) -> int:
        """How many days this patient's dates move back (1 to MAX_DAY_SHIFT)."""
        return 1 + int.from_bytes(self._digest("date-shift", patient)[:8], "big") % MAX_DAY_SHIFT


def create_key(path: str | Path | None = None) -> tuple[PseudonymKey, bool]:
    """The key at ``path`` (default :func:`default_key_file`), created if absent; ``(key, created)``.

    An existing key is never overwritten: replacing it would give every patient a new pseudonym.
    """
    path = Path(path) if path is not None else default_key_file()
    if path.exists():
        return load_key(path), False
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = os.urandom(KEY_BYTES)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # 0600 from the first byte on
    with os.fdopen(descriptor, "w") as fh:
        fh.write(secret.hex() + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return PseudonymKey(secret, path), True


def load_key(path: str | Path | None = None) -> PseudonymKey:
    """Read the key; a clear error when it is missing, malformed or readable by other users."""
    path = Path(path) if path is not None else default_key_file()
    if not path.is_file():
        raise ConfigError(f"no pseudonym key at {path}: {CREATE_HINT}; or point {KEY_FILE_ENV} at an existing one")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"pseudonym key {path} is readable by other users (mode {mode:o}): chmod 600 {path}")
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError as err:
        raise ConfigError(f"pseudonym key {path} is not hex digits ({err}); restore it from your backup") from err
    if len(secret) < KEY_BYTES:
        raise ConfigError(f"pseudonym key {path} holds {len(secret)} bytes, need {KEY_BYTES}; restore it")
    return PseudonymKey(secret, path)


def check_key_outside(key: PseudonymKey, *trees: str | Path) -> None:
    """Refuse a key file stored inside a dataset or output tree, where it would travel with the data it protects."""
    if key.path is None:
        return
    where = key.path.resolve()
    for tree in trees:
        root = Path(tree).resolve()
        if where == root or root in where.parents:
            raise ConfigError(
                f"the pseudonym key {key.path} lies inside {root}: keep it outside data and output folders "
                f"(move it and set {KEY_FILE_ENV}, or use the default under your config folder)"
            )
