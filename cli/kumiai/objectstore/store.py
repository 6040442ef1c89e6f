"""What kumiai needs to know of a site's object store, light enough for every command to import (boto3 is not)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str

    def __repr__(self) -> str:  # never show a secret by accident (logs, tracebacks)
        return "Credentials(<hidden>)"


class StoreAdmin(Protocol):
    """What kumiai needs of a site's object store beyond S3: its owner account and its users."""

    def owner(self) -> Credentials:
        """Credentials of the account that owns the towns' buckets."""

    def ensure_user(self, uid: str, credentials: Credentials) -> bool:
        """Make sure the S3 user `uid` exists and accepts these credentials; True when something changed."""

    def disable_user(self, uid: str) -> bool:
        """Make the S3 user `uid` refuse every request (suspended, its keys removed); True when something changed,
        False when it is already disabled or does not exist."""
