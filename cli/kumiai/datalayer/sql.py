"""SQL to a town's members as the town's superuser (its password from the town's vault, never shown).

Always over TLS verified against the consortium CA (`sslmode=verify-full`), presenting the controller's client
certificate (CN = the superuser): the members' pg_hba accepts the superuser only so (kumiai.datalayer.certs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg2

from kumiai.datalayer.secrets import TownSecrets
from kumiai.datalayer.topology import SUPERUSER, ControllerTLS


def tls_params(tls: ControllerTLS | None) -> dict[str, str]:
    """libpq's TLS parameters for the controller's connections (none without a CA: only layouts built without)."""
    if tls is None:
        return {}
    return {"sslmode": "verify-full", "sslrootcert": str(tls.ca_file), "sslcert": str(tls.cert), "sslkey": str(tls.key)}


def connect(
    address: str,
    port: int,
    secrets: TownSecrets,
    *,
    tls: ControllerTLS | None,
    database: str = "postgres",
    timeout: float = 3,
    app: str,
) -> Any:
    """A connection as the town's superuser; raises psycopg2.Error when the member does not answer."""
    return psycopg2.connect(
        host=address,
        port=port,
        user=SUPERUSER,
        password=secrets.superuser_password,
        dbname=database,
        connect_timeout=max(int(timeout), 1),
        application_name=app,
        **tls_params(tls),
    )


def query_one(
    address: str,
    port: int,
    secrets: TownSecrets,
    sql: str,
    params: Sequence[Any] = (),
    *,
    tls: ControllerTLS | None,
    timeout: float = 3,
    app: str,
) -> tuple[Any, ...] | None:
    """One row of a query in the `postgres` database; None when the member does not answer or has no row."""
    try:
        conn = connect(address, port, secrets, tls=tls, timeout=timeout, app=app)
    except psycopg2.Error:
        return None
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params)
            row = cur.fetchone()
    except psycopg2.Error:
        return None
    finally:
        conn.close()
    return tuple(row) if row is not None else None
