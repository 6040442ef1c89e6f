"""Per-town credentials: generated at onboarding, stored only ansible-vault encrypted, never printed.

The vault key is a file outside git (default .kumiai/vault.key, mode 0600; KUMIAI_VAULT_KEY_FILE overrides);
ansible-playbook gets it with --vault-password-file. Each town's file holds one variable, kumiai_town_secrets.
"""

from __future__ import annotations

import os
import secrets
import string
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from kumiai import paths
from kumiai.errors import KumiaiError

if TYPE_CHECKING:
    from ansible.parsing.vault import VaultLib

SECRETS_VAR = "kumiai_town_secrets"


@dataclass(frozen=True)
class TownSecrets:
    superuser_password: str
    replication_password: str
    app_password: str
    backup_cipher_pass: str
    # The town's S3 user at its sites' object stores (kumiai.objectstore); empty in vaults written before them.
    s3_access_key: str = ""
    s3_secret_key: str = ""

    def __repr__(self) -> str:  # never show a secret by accident (logs, tracebacks)
        return "TownSecrets(<hidden>)"

    @classmethod
    def generate(cls) -> TownSecrets:
        return cls(
            superuser_password=secrets.token_urlsafe(24),
            replication_password=secrets.token_urlsafe(24),
            app_password=secrets.token_urlsafe(24),
            backup_cipher_pass=secrets.token_urlsafe(48),
            **_s3_keys(),
        )


def _s3_keys() -> dict[str, str]:
    # The shape S3 stores issue: 20 upper-case letters and digits, a 40-character secret.
    alphabet = string.ascii_uppercase + string.digits
    return {
        "s3_access_key": "".join(secrets.choice(alphabet) for _ in range(20)),
        "s3_secret_key": secrets.token_urlsafe(30),
    }


def vault_key_file() -> Path:
    env = os.environ.get("KUMIAI_VAULT_KEY_FILE")
    return Path(env).absolute() if env else paths.state_dir() / "vault.key"


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read, atomically (an interrupted run leaves the old file or none)."""
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def ensure_vault_key(path: Path | None = None) -> Path:
    path = path or vault_key_file()
    if not path.exists():
        _write_private(path, (secrets.token_urlsafe(48) + "\n").encode())
    return path


def _vault(key_file: Path) -> VaultLib:
    # Imported here: loading Ansible's configuration costs every kumiai command about 0.1 s at start-up.
    from ansible.constants import DEFAULT_VAULT_ID_MATCH
    from ansible.parsing.vault import VaultLib, VaultSecret

    try:
        key = key_file.read_bytes().strip()
    except OSError as exc:
        raise KumiaiError(f"cannot read the vault key {key_file}: {exc.strerror}") from None
    return VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(key))])


def load_town_secrets(path: Path, key_file: Path | None = None) -> TownSecrets:
    if not path.exists():
        raise KumiaiError(f"no credentials for this town ({path} is missing): onboard it first")
    try:
        plain = _vault(key_file or vault_key_file()).decrypt(path.read_bytes())
    except Exception as exc:  # AnsibleVaultError and friends: say which file, never the content
        raise KumiaiError(f"cannot decrypt {path} with the vault key: {type(exc).__name__}") from None
    data = yaml.safe_load(plain)[SECRETS_VAR]
    return TownSecrets(**data)


def ensure_town_secrets(path: Path, key_file: Path | None = None) -> TownSecrets:
    """The town's credentials: read them when they exist, else generate and store them (once). A vault written
    before the town had S3 keys gets them added."""
    key_file = ensure_vault_key(key_file)
    if path.exists():
        stored = load_town_secrets(path, key_file)
        if stored.s3_access_key:
            return stored
        fresh = TownSecrets(**{**stored.__dict__, **_s3_keys()})
    else:
        fresh = TownSecrets.generate()
    plain = yaml.safe_dump({SECRETS_VAR: fresh.__dict__}, sort_keys=True).encode()
    _write_private(path, _vault(key_file).encrypt(plain))
    return fresh
