"""Parsing what Patroni, pgBackRest, supervisorctl and ansible-playbook answer; the vault round trip."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from kumiai.datalayer.runner import parse_recap
from kumiai.datalayer.secrets import ensure_town_secrets, load_town_secrets
from kumiai.datalayer.status import parse_backups, parse_cluster
from kumiai.lab.supervisor import parse_status

RECAP = """
PLAY RECAP *********************************************************************
nakai-site-a-1             : ok=19   changed=0    unreachable=0    failed=0    skipped=11   rescued=0    ignored=0
nakai-site-a-2             : ok=22   changed=2    unreachable=0    failed=1    skipped=8    rescued=0    ignored=0
"""


def test_recap_counts_per_host() -> None:
    hosts = parse_recap("TASK [x] ***\nok: [h]\n" + RECAP)
    assert hosts["nakai-site-a-1"].ok == 19 and hosts["nakai-site-a-1"].changed == 0
    assert hosts["nakai-site-a-2"].changed == 2 and hosts["nakai-site-a-2"].failed == 1


def test_cluster_view() -> None:
    view = {
        "members": [
            {"name": "n-a-1", "host": "127.0.1.11", "role": "sync_standby", "state": "streaming", "lag": 0},
            {"name": "n-a-2", "host": "127.0.1.12", "role": "leader", "state": "running"},
        ]
    }
    cluster = parse_cluster("site-a", "primary", view)
    assert cluster.leader == "n-a-2" and cluster.sync_standby == "n-a-1" and cluster.healthy
    view["members"][0]["state"] = "starting"
    assert not parse_cluster("site-a", "primary", view).healthy
    assert not parse_cluster("site-a", "primary", None).healthy


def test_standby_cluster_is_healthy_only_when_its_leader_streams() -> None:
    view = {
        "members": [
            {"name": "n-b-1", "role": "replica", "state": "streaming"},
            {"name": "n-b-2", "role": "standby_leader", "state": "running"},
        ]
    }
    assert not parse_cluster("site-b", "standby", view).healthy
    view["members"][1]["state"] = "streaming"
    assert parse_cluster("site-b", "standby", view).healthy


def _backup(label: str, repo: int, stop: int) -> dict[str, object]:
    return {
        "label": label,
        "type": "full",
        "database": {"id": 1, "repo-key": repo},
        "timestamp": {"start": stop - 3, "stop": stop},
        "info": {"size": 100, "repository": {"delta": 10}},
    }


def test_last_backup_per_repo() -> None:
    info = [{"backup": [_backup("1F", 1, 100), _backup("2F", 2, 110), _backup("3F", 1, 120)]}]
    last = parse_backups(info, [1, 2])
    assert last[1] is not None and last[1].label == "3F"
    assert last[2] is not None and last[2].label == "2F"
    assert parse_backups([{"backup": [_backup("1F", 1, 100)]}], [1, 2])[2] is None
    assert parse_backups([], [1, 2]) == {1: None, 2: None}
    # Repos are numbered by site: a town at the consortium's sites 1 and 3 has repos 1 and 3, and a backup in a
    # repo the town does not use is not reported.
    assert parse_backups([{"backup": [_backup("1F", 3, 100), _backup("2F", 2, 110)]}], [1, 3]) == {
        1: None,
        3: parse_backups([{"backup": [_backup("1F", 3, 100)]}], [3])[3],
    }


def test_supervisor_status_lines() -> None:
    text = "etcd-site-a   RUNNING   pid 12, uptime 0:01:00\npatroni-x     FATAL     Exited too quickly\n"
    assert parse_status(text) == {"etcd-site-a": "RUNNING", "patroni-x": "FATAL"}


def test_vault_round_trip_is_encrypted_private_and_stable(tmp_path: Path) -> None:
    keys = tmp_path / "state" / "secrets"
    path = tmp_path / "lab" / "secrets" / "nakai.vault.yml"
    first = ensure_town_secrets(path, keys)
    key = keys / "nakai.key"
    raw = path.read_bytes()
    assert raw.startswith(b"$ANSIBLE_VAULT;1.2;AES256;nakai\n")  # the town's own vault id
    assert first.app_password.encode() not in raw and first.backup_cipher_pass.encode() not in raw
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert ensure_town_secrets(path, keys) == first == load_town_secrets(path, keys)
    assert "hidden" in repr(first) and first.app_password not in repr(first)


def test_two_towns_get_different_credentials(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    a = ensure_town_secrets(tmp_path / "a.vault.yml", keys)
    b = ensure_town_secrets(tmp_path / "b.vault.yml", keys)
    assert (keys / "a.key").read_bytes() != (keys / "b.key").read_bytes()
    assert {a.superuser_password, a.app_password, a.replication_password, a.backup_cipher_pass}.isdisjoint(
        {b.superuser_password, b.app_password, b.replication_password, b.backup_cipher_pass}
    )


def test_a_wrong_key_is_an_explained_error(tmp_path: Path) -> None:
    from kumiai.errors import KumiaiError

    ensure_town_secrets(tmp_path / "a.vault.yml", tmp_path / "k1")
    (tmp_path / "k2").mkdir()
    (tmp_path / "k2" / "a.key").write_text("another key\n")
    (tmp_path / "k2" / "a.key").chmod(0o600)
    with pytest.raises(KumiaiError, match="cannot decrypt"):
        load_town_secrets(tmp_path / "a.vault.yml", tmp_path / "k2")
