"""Where kumiai keeps local state: the audit log, the lab, secrets. Never inside git (see .gitignore)."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """KUMIAI_STATE_DIR, or .kumiai in the current directory."""
    return Path(os.environ.get("KUMIAI_STATE_DIR", ".kumiai")).absolute()


def lab_dir() -> Path:
    """KUMIAI_LAB_DIR, or lab/ under the state directory."""
    env = os.environ.get("KUMIAI_LAB_DIR")
    return Path(env).absolute() if env else state_dir() / "lab"


def evidence_dir() -> Path:
    """Evidence of drills and failovers: kept, never purged with the lab."""
    return state_dir() / "evidence"


def audit_log() -> Path:
    return state_dir() / "audit" / "audit.jsonl"


def project_root() -> Path:
    """The checkout holding roles/, playbooks/, stacks/ and templates/ (kumiai is installed from it)."""
    return Path(__file__).resolve().parents[2]


def templates_dir() -> Path:
    return project_root() / "templates"
