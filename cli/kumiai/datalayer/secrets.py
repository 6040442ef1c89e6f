"""Per-town credentials: generated at onboarding, stored only ansible-vault encrypted, never printed.

Each town's vault (one variable, kumiai_town_secrets) is encrypted under the town's own key, with the town id as
its vault id: a file outside git, `<state dir>/secrets/towns/<town>.key` (KUMIAI_VAULT_KEYS_DIR overrides
the directory), mode 0600 in a 0700 directory. ansible-playbook gets the keys of the towns it runs (--vault-id
town@file). kumiai refuses a key file that its group or others can read, and never makes a new key for a town
whose vault exists: a lost key comes back from an escrow (kumiai.datalayer.escrow, `kumiai secrets recover`).
Vaults written before per-town keys (one key, KUMIAI_VAULT_KEY_FILE or `<state dir>/vault.key`) are still read,
and re-encrypted under the town's key the next time the town is onboarded.
"""

from __future__ import annotations

import os
import secrets
import stat
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from kumiai import paths
from kumiai.errors import InputError, KumiaiError, Problem

if TYPE_CHECKING:
    from ansible.parsing.vault import VaultLib

SECRETS_VAR = "kumiai_town_secrets"
VAULT_SUFFIX = ".vault.yml"
KEY_SUFFIX = ".key"


@dataclass(frozen=True)
class TownSecrets:
    superuser_password: str
    replication_password: str
    app_password: str
    backup_cipher_pass: str
    # The town's S3 user at its sites' object stores (kumiai.objectstore); empty in vaults written before them.
    s3_access_key: str = ""
    s3_secret_key: str = ""
    # The town's etcd user at its sites (kumiai.datalayer.etcd); empty in vaults written before it.
    etcd_password: str = ""
    # Basic auth of the members' Patroni REST API for state-changing calls; empty in vaults written before it.
    patroni_rest_password: str = ""

    def __repr__(self) -> str:  # never show a secret by accident (logs, tracebacks)
        return "TownSecrets(<hidden>)"

    @classmethod
    def generate(cls) -> TownSecrets:
        return cls(
            superuser_password=secrets.token_urlsafe(24),
            replication_password=secrets.token_urlsafe(24),
            app_password=secrets.token_urlsafe(24),
            backup_cipher_pass=secrets.token_urlsafe(48),
            etcd_password=secrets.token_urlsafe(24),
            patroni_rest_password=secrets.token_urlsafe(24),
            **_s3_keys(),
        )


def _s3_keys() -> dict[str, str]:
    # The shape S3 stores issue: 20 upper-case letters and digits, a 40-character secret.
    alphabet = string.ascii_uppercase + string.digits
    return {
        "s3_access_key": "".join(secrets.choice(alphabet) for _ in range(20)),
        "s3_secret_key": secrets.token_urlsafe(30),
    }


def keys_dir() -> Path:
    """Where the towns' vault keys live: KUMIAI_VAULT_KEYS_DIR, else secrets/towns/ under the state directory
    (beside the audit log's key, secrets/audit.key, which is not a town's)."""
    env = os.environ.get("KUMIAI_VAULT_KEYS_DIR")
    return Path(env).absolute() if env else paths.state_dir() / "secrets" / "towns"


def town_key_file(town_id: str, keys: Path | None = None) -> Path:
    return (keys or keys_dir()) / f"{town_id}{KEY_SUFFIX}"


def town_secret_files(vault_file: Path, keys: Path | None = None) -> tuple[Path, Path]:
    """What this controller holds of one town's secrets: its vault and the key it is encrypted under (what
    crypto-shredding a town destroys; copies in escrow files are outside kumiai's reach)."""
    return vault_file, town_key_file(town_of(vault_file), keys)


def town_of(vault_file: Path) -> str:
    """The town a vault file belongs to (<town>.vault.yml)."""
    return vault_file.name.removesuffix(VAULT_SUFFIX)


def legacy_key_file() -> Path:
    """The one vault key of the towns' vaults written before per-town keys."""
    env = os.environ.get("KUMIAI_VAULT_KEY_FILE")
    return Path(env).absolute() if env else paths.state_dir() / "vault.key"


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read, atomically (an interrupted run leaves the old file or none), in a
    directory only its owner can enter when kumiai creates it."""
    for missing in [d for d in reversed(path.parents) if not d.exists()]:
        missing.mkdir(mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def check_private(path: Path, what: str = "a key file") -> None:
    """Refuse (InputError, exit 2) a file that its group or others can read or write."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise InputError(
            Problem(
                str(path),
                "mode",
                f"is {mode:04o}: {what} must be readable by its owner only (0600); fix it with `chmod 600 {path}`",
            )
        )


def read_key(path: Path) -> bytes:
    """A vault key, after checking that only its owner can read it."""
    try:
        check_private(path)
        return path.read_bytes().strip()
    except OSError as exc:
        raise KumiaiError(f"cannot read the vault key {path}: {exc.strerror}") from None


def missing_key(town_id: str, key_file: Path, vault_file: Path) -> KumiaiError:
    return KumiaiError(
        f"the vault key of {town_id} ({key_file}) is missing, but its encrypted secrets exist ({vault_file}): "
        "kumiai does not make a new key for them; recover the key with "
        "`kumiai secrets recover --from ESCROW-FILE --identity KEY-FILE`"
    )


def ensure_town_key(town_id: str, vault_file: Path, keys: Path | None = None) -> Path:
    """The town's key file, created (0600 in a 0700 directory) only while the town has no vault."""
    path = town_key_file(town_id, keys)
    if path.exists():
        check_private(path)
        return path
    if vault_file.exists() and vault_id_of(vault_file.read_bytes()) is not None:
        raise missing_key(town_id, path, vault_file)
    write_private(path, (secrets.token_urlsafe(48) + "\n").encode())
    return path


def check_town_keys(vault_files: list[Path], keys: Path | None = None) -> None:
    """Refuse before anything is written: a key others can read, or a key missing beside its town's vault."""
    for vault_file in vault_files:
        town_id = town_of(vault_file)
        path = town_key_file(town_id, keys)
        if path.exists():
            check_private(path)
        elif vault_file.exists() and vault_id_of(vault_file.read_bytes()) is not None:
            raise missing_key(town_id, path, vault_file)


def vault_id_of(vaulttext: bytes) -> str | None:
    """The vault id a vault file was encrypted with (its header's fourth field); None for the one-key format."""
    header = vaulttext.split(b"\n", 1)[0].decode("ascii", "replace").strip().split(";")
    return header[3] if len(header) > 3 else None


def _vault(key: bytes, vault_id: str | None = None) -> VaultLib:
    # Imported here: loading Ansible's configuration costs every kumiai command about 0.1 s at start-up.
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    return VaultLib([(vault_id or DEFAULT_VAULT_ID_MATCH, VaultSecret(key))])


def encrypt_town_secrets(town_id: str, key: bytes, town_secrets: TownSecrets) -> bytes:
    """The vault file of a town: its secrets under its key, labelled with its id."""
    from ansible.parsing.vault import VaultSecret

    plain = yaml.safe_dump({SECRETS_VAR: town_secrets.__dict__}, sort_keys=True).encode()
    return _vault(key, town_id).encrypt(plain, secret=VaultSecret(key), vault_id=town_id)


def decrypt_town_secrets(vault_file: Path, vaulttext: bytes, key: bytes) -> TownSecrets:
    try:
        plain = _vault(key, vault_id_of(vaulttext)).decrypt(vaulttext)
    except Exception as exc:  # AnsibleVaultError and friends: say which file, never the content
        raise KumiaiError(f"cannot decrypt {vault_file} with its vault key: {type(exc).__name__}") from None
    return TownSecrets(**yaml.safe_load(plain)[SECRETS_VAR])


def load_town_secrets(path: Path, keys: Path | None = None) -> TownSecrets:
    """A town's secrets from its vault file, with the town's key from `keys` (default: keys_dir())."""
    if not path.exists():
        raise KumiaiError(f"no credentials for this town ({path} is missing): onboard it first")
    vaulttext = path.read_bytes()
    town_id = town_of(path)
    if vault_id_of(vaulttext) is None:
        key_file = legacy_key_file()
    else:
        key_file = town_key_file(town_id, keys)
        if not key_file.exists():
            raise missing_key(town_id, key_file, path)
    return decrypt_town_secrets(path, vaulttext, read_key(key_file))


def ensure_town_secrets(path: Path, keys: Path | None = None) -> TownSecrets:
    """The town's credentials: read them when they exist, else generate and store them (once). A vault written
    before the town had S3 keys gets them added; one written under the one shared key moves to the town's key."""
    town_id = town_of(path)
    key_file = ensure_town_key(town_id, path, keys)
    if path.exists():
        stored = load_town_secrets(path, keys)
        legacy = vault_id_of(path.read_bytes()) is None
        if stored.s3_access_key and stored.etcd_password and stored.patroni_rest_password and not legacy:
            return stored
        added = {} if stored.s3_access_key else _s3_keys()
        if not stored.etcd_password:
            added["etcd_password"] = secrets.token_urlsafe(24)
        if not stored.patroni_rest_password:
            added["patroni_rest_password"] = secrets.token_urlsafe(24)
        fresh = TownSecrets(**{**stored.__dict__, **added}) if added else stored
    else:
        fresh = TownSecrets.generate()
    write_private(path, encrypt_town_secrets(town_id, read_key(key_file), fresh))
    return fresh


def vault_id_args(town_ids: list[str] | tuple[str, ...], keys: Path | None = None) -> list[str]:
    """ansible-playbook arguments giving it the keys of these towns (those that have one), and the one shared key
    of vaults written before per-town keys when it still exists."""
    args = []
    for town_id in town_ids:
        key_file = town_key_file(town_id, keys)
        if key_file.exists():
            check_private(key_file)
            args += ["--vault-id", f"{town_id}@{key_file}"]
    legacy = legacy_key_file()
    if legacy.exists():
        check_private(legacy)
        args += ["--vault-id", f"default@{legacy}"]
    return args


def shred_town_key(files: Sequence[Path]) -> list[Path]:
    """Crypto-shredding of a town: destroy every file that carries its backup cipher key (its vault file, the
    pgBackRest configurations with `repoN-cipher-pass`), so its encrypted backups can no longer be read. Each file
    is overwritten in place before it is unlinked (on journaling or copy-on-write storage an overwrite is not a
    guarantee; what makes the backups unreadable is that no copy of the key is left). The files destroyed; none
    when they are already gone. Copies taken outside kumiai (escrow) stay readable until their holders destroy
    them."""
    destroyed = []
    for path in files:
        if path.is_symlink():
            path.unlink()  # the key is where the link points, which is in this list when kumiai wrote it
            destroyed.append(path)
            continue
        if not path.is_file():
            continue
        size = path.stat().st_size
        with path.open("r+b") as fh:
            fh.write(secrets.token_bytes(size))
            fh.flush()
            os.fsync(fh.fileno())
        path.unlink()
        destroyed.append(path)
    return destroyed
