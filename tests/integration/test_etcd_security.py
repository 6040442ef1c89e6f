"""Each site's etcd on the shared lab: TLS only, a client certificate from the consortium CA required, and each
town's etcd identity reaching only its own keys. Every refusal is checked next to the same request succeeding with
the right identity."""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import BIN, ROOT, Lab

from kumiai.datalayer.etcd import EtcdPki, town_prefix, town_user
from kumiai.datalayer.secrets import load_town_secrets
from kumiai.inventory import load_inventory
from kumiai.lab.layout import build_layout
from kumiai.lab.slots import read_slots
from kumiai.pki import ensure_ca, ensure_cert

pytestmark = pytest.mark.integration

TOWN, OTHER = "nakai", "kiyokawa"
SITE = "site-a"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _context(pki: EtcdPki, cert: Path | None, key: Path | None, ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca or pki.ca_file))
    if cert and key:
        context.load_cert_chain(str(cert), str(key))
    return context


class Gateway:
    """etcd's v3 JSON gateway at one site, as a town's Patroni reaches it."""

    def __init__(self, url: str, context: ssl.SSLContext) -> None:
        self.url, self.context = url, context
        self.token: str | None = None

    def call(self, api: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json", **({"Authorization": self.token} if self.token else {})}
        request = urllib.request.Request(self.url + api, json.dumps(body).encode(), headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10, context=self.context) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            text = exc.read()
            try:
                return exc.code, json.loads(text or b"{}")
            except ValueError:
                return exc.code, {"error": text.decode(errors="replace").strip()}

    def login(self, user: str, password: str) -> tuple[int, dict[str, Any]]:
        status, body = self.call("/v3/auth/authenticate", {"name": user, "password": password})
        self.token = body.get("token")
        return status, body

    def keys(self, prefix: str) -> tuple[int, dict[str, Any]]:
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        return self.call("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(end), "keys_only": True})

    def put(self, key: str, value: str) -> tuple[int, dict[str, Any]]:
        return self.call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    def delete(self, key: str) -> tuple[int, dict[str, Any]]:
        return self.call("/v3/kv/deleterange", {"key": _b64(key)})


@pytest.fixture(scope="module")
def etcd(lab: Lab) -> dict[str, Any]:
    topology = build_layout(lab.lab_dir, load_inventory(lab.inventory), read_slots(lab.lab_dir))
    pki = EtcdPki(lab.lab_dir)
    return {
        "pki": pki,
        "url": f"https://{topology.site(SITE).etcd_endpoint}",
        "log": topology.site(SITE).supervisor_dir / "log" / f"etcd-{topology.site(SITE).etcd_name}.log",
        "password": {
            t: load_town_secrets(topology.secrets_file(t), lab.vault_keys).etcd_password for t in (TOWN, OTHER)
        },
    }


def _refused(log: Path, reason: str, request: Any) -> BaseException:
    """Run `request`, which must fail on the client's side, and wait for etcd to log why it refused the connection
    (the client only sees a TLS alert, the same for every refusal)."""
    start = log.stat().st_size
    try:
        request()
    except (OSError, urllib.error.URLError) as exc:
        failure: BaseException = exc
    else:
        pytest.fail("etcd answered")
    deadline = time.monotonic() + 10
    while True:
        with log.open("rb") as fh:
            fh.seek(start)
            new = fh.read().decode(errors="replace")
        if reason in new or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert 'rejected connection from "127.0.0.1' in new and reason in new, new[-2000:]
    return failure


def _health(url: str, context: ssl.SSLContext | None) -> str:
    with urllib.request.urlopen(url + "/health", timeout=10, context=context) as resp:
        return resp.read().decode()


def test_etcd_refuses_clients_without_a_certificate_from_the_consortium_ca(
    etcd: dict[str, Any], tmp_path: Path
) -> None:
    pki: EtcdPki = etcd["pki"]
    url: str = etcd["url"]
    http = url.replace("https://", "http://")
    # Positive control: the same request with kumiai's root certificate.
    assert json.loads(_health(url, _context(pki, pki.root.cert, pki.root.key)))["health"] == "true"
    log = etcd["log"]
    # Plain http: no answer at all from a TLS listener.
    plain = _refused(log, "first record does not look like a TLS handshake", lambda: _health(http, None))
    assert not isinstance(plain, urllib.error.HTTPError)
    # TLS without a client certificate: the handshake is refused for want of one.
    bare = _refused(log, "client didn't provide a certificate", lambda: _health(url, _context(pki, None, None)))
    assert any(a in str(bare).upper() for a in ("BAD_CERTIFICATE", "CERTIFICATE_REQUIRED")), bare
    # A certificate naming root, signed by another CA: refused as signed by an unknown authority.
    other_ca = ensure_ca(tmp_path / "other-ca", "not the consortium")
    rogue = ensure_cert(other_ca, tmp_path, "rogue", common_name="root", client=True)
    foreign = _refused(
        log, "certificate signed by unknown authority", lambda: _health(url, _context(pki, rogue.cert, rogue.key))
    )
    assert any(a in str(foreign).upper() for a in ("BAD_CERTIFICATE", "UNKNOWN_CA")), foreign


def test_etcdctl_as_root_only_with_the_root_certificate(etcd: dict[str, Any], tmp_path: Path) -> None:
    pki: EtcdPki = etcd["pki"]
    base = ["/usr/bin/etcdctl", f"--endpoints={etcd['url']}", f"--cacert={pki.ca_file}", "--dial-timeout=3s"]
    env = {**os.environ, "ETCDCTL_API": "3"}
    root = subprocess.run(
        [*base, f"--cert={pki.root.cert}", f"--key={pki.root.key}", "user", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert root.returncode == 0, root.stderr
    assert {"root", town_user(TOWN), town_user(OTHER)} <= set(root.stdout.split())
    # A town's certificate names no user: over gRPC it authenticates as nobody and may not administer users.
    town = pki.town(TOWN)
    nobody = subprocess.run(
        [*base, f"--cert={town.cert}", f"--key={town.key}", "user", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert nobody.returncode != 0
    assert "user name is empty" in nobody.stderr or "permission denied" in nobody.stderr, nobody.stderr


def test_a_towns_identity_reaches_its_own_keys_and_no_other_towns(etcd: dict[str, Any]) -> None:
    pki: EtcdPki = etcd["pki"]
    town_files = pki.town(TOWN)
    gateway = Gateway(etcd["url"], _context(pki, town_files.cert, town_files.key))
    mine, theirs = town_prefix(SITE, TOWN), town_prefix(SITE, OTHER)

    # Without logging in: the certificate alone names no user, nothing is readable.
    status, body = gateway.keys(mine)
    assert status != 200 and "permission denied" in body.get("error", ""), body
    # The wrong password for the town's user.
    status, body = gateway.login(town_user(TOWN), etcd["password"][OTHER])
    assert status != 200 and "authentication failed" in body.get("error", ""), body
    # The town's password with the town's user: it reads its own cluster's keys (Patroni's leader key among them).
    status, body = gateway.login(town_user(TOWN), etcd["password"][TOWN])
    assert status == 200 and body.get("token"), body
    status, body = gateway.keys(mine)
    assert status == 200, body
    assert mine + "leader" in {base64.b64decode(kv["key"]).decode() for kv in body.get("kvs", [])}, body

    scratch_mine, scratch_theirs = mine + "kumiai-test-scratch", theirs + "kumiai-test-scratch"
    try:
        status, body = gateway.put(scratch_mine, "x")
        assert status == 200, body
        # The other town's keys: neither written nor read.
        status, body = gateway.put(scratch_theirs, "x")
        assert status != 200 and "permission denied" in body.get("error", ""), body
        status, body = gateway.put(theirs + "leader", "hijacked")
        assert status != 200 and "permission denied" in body.get("error", ""), body
        status, body = gateway.keys(theirs)
        assert status != 200 and "permission denied" in body.get("error", ""), body
        # Nor anything outside its prefix (another site's namespace, the root of the key space).
        status, body = gateway.put("/kumiai/site-b/" + TOWN + "/kumiai-test-scratch", "x")
        assert status != 200 and "permission denied" in body.get("error", ""), body
    finally:
        status, body = gateway.delete(scratch_mine)
    assert status == 200 and body.get("deleted") == "1", body

    # The other town's own identity still owns its keys (its leader key is as Patroni wrote it).
    other = Gateway(etcd["url"], _context(pki, pki.town(OTHER).cert, pki.town(OTHER).key))
    assert other.login(town_user(OTHER), etcd["password"][OTHER])[0] == 200
    status, body = other.call("/v3/kv/range", {"key": _b64(theirs + "leader")})
    assert status == 200 and body.get("kvs"), body
    assert base64.b64decode(body["kvs"][0]["value"]).decode() != "hijacked"


def _etcd_access(lab: Lab, etcd: dict[str, Any], *args: str, check: bool = False) -> dict[str, Any]:
    """The etcd role's module, as the role runs it on the controller."""
    pki: EtcdPki = etcd["pki"]
    module_args = {
        "endpoint": etcd["url"],
        "ca_file": str(pki.ca_file),
        "cert_file": str(pki.root.cert),
        "key_file": str(pki.root.key),
        **dict(a.split("=", 1) for a in args),
    }
    cmd = [str(BIN / "ansible"), "localhost", "-m", "etcd_access", "-a", json.dumps(module_args), "-o"]
    env = {
        **lab.env,
        "ANSIBLE_LIBRARY": str(ROOT / "roles" / "etcd" / "library"),
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
    }
    run = subprocess.run(cmd + (["--check"] if check else []), capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout.split("=>", 1)[1])


def test_town_identity_reconciliation_is_idempotent_and_check_mode_safe(lab: Lab, etcd: dict[str, Any]) -> None:
    user = "kumiai-town-zz-test"
    present = [f"user={user}", f"role={user}", f"prefix={town_prefix(SITE, 'zz-test')}", "state=present"]
    try:
        assert _etcd_access(lab, etcd, *present, "password=first", check=True)["changed"]
        assert not _etcd_access(lab, etcd, f"user={user}", f"role={user}", "state=absent")["changed"]
        assert _etcd_access(lab, etcd, *present, "password=first")["changed"]
        assert not _etcd_access(lab, etcd, *present, "password=first")["changed"]
        changed = _etcd_access(lab, etcd, *present, "password=second")
        assert changed["actions"] == [f"set the password of {user}"], changed
        assert _etcd_access(lab, etcd, f"user={user}", f"role={user}", "state=absent", check=True)["changed"]
        assert not _etcd_access(lab, etcd, *present, "password=second")["changed"]
        # Turning authentication on again changes nothing.
        assert not _etcd_access(lab, etcd, "state=auth_enabled")["changed"]
    finally:
        _etcd_access(lab, etcd, f"user={user}", f"role={user}", "state=absent")
    assert not _etcd_access(lab, etcd, f"user={user}", f"role={user}", "state=absent")["changed"]
