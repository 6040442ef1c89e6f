"""The patroni_fence module against a stand-in etcd (its v3 JSON gateway) and Patroni REST APIs: a site that was
primary is turned into a standby cluster in its own DCS before its Patroni starts, and only then."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "roles" / "patroni_cluster" / "library" / "patroni_fence.py"
KEY = "/kumiai/site-a/nakai/config"
STANDBY = {
    "host": "127.0.2.11,127.0.2.12",
    "port": 5432,
    "primary_slot_name": "kumiai_dr_site_a",
    "create_replica_methods": ["basebackup"],
}
PRIMARY_CONFIG = {
    "ttl": 20,
    "synchronous_mode": True,
    "slots": {"kumiai_dr_site_b": {"type": "physical"}},
    "postgresql": {"use_pg_rewind": True},
}


@dataclass
class World:
    """What the stand-in services answer: the site's DCS key, this member's Patroni, the primary site's view."""

    config: dict[str, Any] | None = None
    revision: int = 7
    member_running: bool = False
    primary_members: list[dict[str, str]] = field(default_factory=list)
    writes: int = 0
    change_before_txn: bool = False
    password: str | None = None  # set: the stand-in etcd has authentication on, one user "town"


def _handler(world: World) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/member/patroni" and world.member_running:
                self._send(200, {"state": "running", "role": "replica"})
            elif self.path == "/primary/cluster":
                self._send(200, {"members": world.primary_members})
            else:
                self._send(503, {})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.path == "/v3/auth/authenticate":
                if world.password is not None and (body["name"], body["password"]) == ("town", world.password):
                    self._send(200, {"token": "token-1"})
                else:
                    self._send(400, {"error": "etcdserver: authentication failed, invalid user ID or password"})
                return
            if world.password is not None and self.headers.get("Authorization") != "token-1":
                self._send(400, {"error": "etcdserver: user name is empty"})
                return
            assert base64.b64decode(body.get("key", body.get("compare", [{}])[0].get("key", ""))).decode() == KEY
            if self.path == "/v3/kv/range":
                if world.config is None:
                    self._send(200, {"header": {}})
                    return
                value = base64.b64encode(json.dumps(world.config).encode()).decode()
                self._send(200, {"kvs": [{"key": body["key"], "value": value, "mod_revision": str(world.revision)}]})
            elif self.path == "/v3/kv/txn":
                if world.change_before_txn:
                    world.revision += 1
                    world.config = {**(world.config or {}), "standby_cluster": STANDBY}
                if int(body["compare"][0]["mod_revision"]) != world.revision:
                    self._send(200, {"succeeded": False})
                    return
                put = body["success"][0]["request_put"]
                world.config = json.loads(base64.b64decode(put["value"]))
                world.revision += 1
                world.writes += 1
                self._send(200, {"succeeded": True})
            else:
                self._send(404, {})

    return Handler


@pytest.fixture
def world() -> Iterator[tuple[World, str]]:
    state = World()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def fence(base: str, tmp_path: Path, *, check_mode: bool = False, **extra: Any) -> dict[str, Any]:
    args = {
        **extra,
        "etcd_url": base,
        "key": KEY,
        "standby_cluster": STANDBY,
        "member_url": f"{base}/member",
        "primary_urls": [f"{base}/primary"],
        "timeout": 2,
        "_ansible_check_mode": check_mode,
    }
    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    proc = subprocess.run(
        [sys.executable, str(MODULE), str(args_file)], capture_output=True, text=True, timeout=60, check=False
    )
    return dict(json.loads(proc.stdout))


LEADER = {"name": "nakai-site-b-1", "role": "leader", "state": "running"}


def test_a_site_that_was_primary_becomes_a_standby_of_the_running_primary(world, tmp_path: Path) -> None:
    state, base = world
    state.config, state.primary_members = dict(PRIMARY_CONFIG), [LEADER]
    result = fence(base, tmp_path)
    assert (result.get("failed", False), result["changed"], result["state"]) == (False, True, "fenced")
    # The same settings, its old slots gone, following the primary site.
    assert state.config == {
        "ttl": 20,
        "synchronous_mode": True,
        "postgresql": {"use_pg_rewind": True},
        "standby_cluster": STANDBY,
    }
    again = fence(base, tmp_path)
    assert (again["changed"], again["state"], state.writes) == (False, "standby", 1)


def test_it_refuses_when_the_primary_site_has_no_running_leader(world, tmp_path: Path) -> None:
    state, base = world
    state.config = dict(PRIMARY_CONFIG)
    for members in ([], [{"name": "nakai-site-b-1", "role": "standby_leader", "state": "streaming"}]):
        state.primary_members = members
        result = fence(base, tmp_path)
        assert result["failed"] is True and "not started" in result["msg"]
    assert state.config == PRIMARY_CONFIG and state.writes == 0


def test_a_running_member_or_a_fresh_site_is_left_alone(world, tmp_path: Path) -> None:
    state, base = world
    state.primary_members = [LEADER]
    fresh = fence(base, tmp_path)
    assert (fresh["changed"], fresh["state"]) == (False, "not_bootstrapped")
    state.config, state.member_running = dict(PRIMARY_CONFIG), True
    running = fence(base, tmp_path)
    assert (running["changed"], running["state"]) == (False, "running")
    assert state.config == PRIMARY_CONFIG and state.writes == 0


def test_check_mode_reports_the_fencing_and_writes_nothing(world, tmp_path: Path) -> None:
    state, base = world
    state.config, state.primary_members = dict(PRIMARY_CONFIG), [LEADER]
    result = fence(base, tmp_path, check_mode=True)
    assert (result["changed"], result["state"]) == (True, "fenced")
    assert state.config == PRIMARY_CONFIG and state.writes == 0


def test_a_member_of_the_same_site_fencing_first_is_not_overwritten(world, tmp_path: Path) -> None:
    state, base = world
    state.config, state.primary_members, state.change_before_txn = dict(PRIMARY_CONFIG), [LEADER], True
    result = fence(base, tmp_path)
    assert (result.get("failed", False), result["changed"], result["state"], state.writes) == (
        False,
        False,
        "standby",
        0,
    )
    assert state.config is not None and state.config["standby_cluster"] == STANDBY


def test_the_fence_authenticates_as_the_towns_etcd_user(world, tmp_path: Path) -> None:
    state, base = world
    state.config, state.primary_members, state.password = dict(PRIMARY_CONFIG), [LEADER], "right"
    refused = fence(base, tmp_path, username="town", password="wrong")
    assert refused.get("failed") and "authentication failed" in refused["msg"], refused
    assert "wrong" not in json.dumps(refused) and state.writes == 0
    result = fence(base, tmp_path, username="town", password="right")
    assert (result.get("failed", False), result["changed"], result["state"]) == (False, True, "fenced")
    assert state.config is not None and state.config["standby_cluster"] == STANDBY
