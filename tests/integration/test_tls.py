"""TLS and authentication on the PostgreSQL and Patroni REST channels of the shared lab, and `kumiai certs rotate`.

Each refusal asserts its reason next to a positive control that succeeds with the right identity.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psycopg2
import pytest
from conftest import Lab
from cryptography import x509

from kumiai.datalayer.secrets import TownSecrets, load_town_secrets

pytestmark = pytest.mark.integration

TOWN = "nakai"
REST_PORT = 8008


def _secrets(lab: Lab, town: str = TOWN) -> TownSecrets:
    return load_town_secrets(lab.lab_dir / "secrets" / f"{town}.vault.yml", lab.vault_keys)


def _ca(lab: Lab) -> Path:
    return lab.lab_dir / "ca" / "ca.crt"


def _member_pki(lab: Lab, member: str) -> Path:
    return lab.lab_dir / "pki" / "members" / member


def _leader(town: dict[str, Any], site: str = "primary") -> dict[str, Any]:
    cluster = town[site]
    return dict(next(m for m in cluster["members"] if m["name"] == cluster["leader"]))


def _rest(lab: Lab, host: str, method: str, path: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    body = b"{}" if method == "POST" else None
    req = urllib.request.Request(f"https://{host}:{REST_PORT}{path}", data=body, method=method, headers=headers)
    context = ssl.create_default_context(cafile=str(_ca(lab)))
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_patroni_rest_api_refuses_state_changes_without_the_towns_credentials(lab: Lab) -> None:
    town = lab.status()[TOWN]
    leader = _leader(town)["host"]
    right = ("kumiai", _secrets(lab).patroni_rest_password)
    before = town["primary"]["leader"]
    # No credentials, a wrong password, another town's password: 401 before Patroni looks at the request.
    other = ("kumiai", _secrets(lab, "kiyokawa").patroni_rest_password)
    for auth in (None, ("kumiai", "wrong"), other):
        code, text = _rest(lab, leader, "POST", "/switchover", auth)
        assert code == 401, (auth and auth[0], code, text)
    # Positive control, changing nothing: the same member accepts an authenticated reload.
    code, text = _rest(lab, leader, "POST", "/reload", right)
    assert code == 202, (code, text)
    # Reading needs no credentials, but only over HTTPS verified against the consortium CA.
    code, _ = _rest(lab, leader, "GET", "/cluster")
    assert code == 200
    conn = http.client.HTTPConnection(leader, REST_PORT, timeout=10)
    with pytest.raises((http.client.HTTPException, ConnectionError, socket.timeout)):
        conn.request("GET", "/cluster")
        conn.getresponse()
    conn.close()
    assert lab.status()[TOWN]["primary"]["leader"] == before


def _connect(host: str, **kwargs: Any) -> Any:
    return psycopg2.connect(host=host, port=5432, connect_timeout=5, **kwargs)


def _refused(host: str, **kwargs: Any) -> str:
    with pytest.raises(psycopg2.OperationalError) as caught:
        _connect(host, **kwargs).close()
    return str(caught.value)


def test_postgres_refuses_plain_and_certificateless_connections(lab: Lab) -> None:
    town = lab.status()[TOWN]
    leader = _leader(town)
    host = leader["host"]
    s = _secrets(lab)
    ca = str(_ca(lab))
    app = {"user": f"{TOWN}_app", "password": s.app_password, "dbname": TOWN}
    # sslmode=disable is refused by pg_hba, with the right password; the same over verified TLS is accepted.
    reason = _refused(host, sslmode="disable", **app)
    assert "no encryption" in reason and "rejects connection" in reason, reason
    _connect(host, sslmode="verify-full", sslrootcert=ca, **app).close()

    # A member's replication connection: its role and password alone are refused; with its certificate accepted;
    # another member's certificate (CN naming another member) is refused.
    dr_member = _leader(town, "dr")["name"]
    other = next(m["name"] for m in town["primary"]["members"] if m["name"] != dr_member)
    repl = {"user": dr_member, "password": s.replication_password, "dbname": "postgres", "replication": "true"}
    reason = _refused(host, sslmode="verify-full", sslrootcert=ca, **repl)
    assert "requires a valid client certificate" in reason, reason
    own, wrong = _member_pki(lab, dr_member), _member_pki(lab, other)
    log = lab.lab_dir / town["primary"]["site"] / "supervisor" / "log" / f"patroni-{leader['name']}.log"
    seen = log.stat().st_size
    reason = _refused(
        host,
        sslmode="verify-full",
        sslrootcert=ca,
        sslcert=str(wrong / "client.crt"),
        sslkey=str(wrong / "client.key"),
        **repl,
    )
    # The client is told only that authentication failed; the member's log says why.
    assert "authentication failed" in reason, reason
    expected = f'clientcert=verify-full) failed for user "{dr_member}": CN mismatch'
    deadline, logged = time.monotonic() + 30, ""
    while expected not in logged and time.monotonic() < deadline:  # supervisord writes the log a moment later
        time.sleep(1)
        with log.open("rb") as fh:
            fh.seek(seen)
            logged = fh.read().decode(errors="replace")
    assert f'clientcert=verify-full) failed for user "{dr_member}": CN mismatch' in logged, logged[-2000:]
    conn = _connect(
        host,
        sslmode="verify-full",
        sslrootcert=ca,
        sslcert=str(own / "client.crt"),
        sslkey=str(own / "client.key"),
        **repl,
    )
    conn.autocommit = True  # a walsender takes replication commands, never a transaction block
    with conn.cursor() as cur:
        cur.execute("IDENTIFY_SYSTEM")
        assert cur.fetchone() is not None
    conn.close()

    # The superuser likewise: without the controller's certificate refused, with it accepted.
    su = {"user": "postgres", "password": s.superuser_password, "dbname": "postgres"}
    reason = _refused(host, sslmode="verify-full", sslrootcert=ca, **su)
    assert "requires a valid client certificate" in reason, reason
    controller = lab.lab_dir / "pki" / "controller"
    _connect(
        host,
        sslmode="verify-full",
        sslrootcert=ca,
        sslcert=str(controller / "client.crt"),
        sslkey=str(controller / "client.key"),
        **su,
    ).close()


def _rest_serial(lab: Lab, host: str) -> int:
    """The serial of the certificate the member's REST API serves; a reload re-creates its listener, so a moment
    of refused connections right after one is waited out."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return _served_serial(lab, host)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _served_serial(lab: Lab, host: str) -> int:
    context = ssl.create_default_context(cafile=str(_ca(lab)))
    with (
        socket.create_connection((host, REST_PORT), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def _wait_dr_streaming(lab: Lab, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        town = lab.status()[TOWN]
        dr = {m["role"]: m["state"] for m in town["dr"]["members"]}
        if dr == {"standby_leader": "streaming", "replica": "streaming"} or time.monotonic() > deadline:
            return town
        time.sleep(2)


def test_certs_rotate_reissues_every_certificate_and_the_cluster_keeps_replicating(lab: Lab) -> None:
    town = lab.status()[TOWN]
    leader = _leader(town)["host"]
    served_before = _rest_serial(lab, leader)
    run = lab.kumiai("certs", "rotate", "--json", timeout=600)
    assert run.code == 0, str(run)
    serials = json.loads(run.stdout)["certificates"]
    assert serials and all(s["before"] != s["after"] for s in serials.values()), serials
    # Patroni serves the new certificate (reloaded, not restarted) and the leader is the same.
    served_after = _rest_serial(lab, leader)
    assert served_after != served_before
    leader_cert = next(p for p in serials if p.endswith(f"/{_leader(town)['name']}/server.crt"))
    assert served_after == serials[leader_cert]["after"]
    # The DR standby reconnects with the new client certificate: restart its WAL receiver and see it stream.
    s = _secrets(lab)
    controller = lab.lab_dir / "pki" / "controller"
    dr_leader = _leader(town, "dr")["host"]
    conn = _connect(
        dr_leader,
        user="postgres",
        password=s.superuser_password,
        dbname="postgres",
        sslmode="verify-full",
        sslrootcert=str(_ca(lab)),
        sslcert=str(controller / "client.crt"),
        sslkey=str(controller / "client.key"),
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_wal_receiver")
    conn.close()
    after = _wait_dr_streaming(lab)
    assert {m["role"]: m["state"] for m in after["dr"]["members"]} == {
        "standby_leader": "streaming",
        "replica": "streaming",
    }, after
    assert after["primary"]["leader"] == town["primary"]["leader"]
    assert after["healthy"], after
