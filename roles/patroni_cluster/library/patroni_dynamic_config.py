#!/usr/bin/python
"""Ansible module: converge a running Patroni cluster's cluster-wide settings through its REST API."""

from __future__ import annotations

import json

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import fetch_url

DOCUMENTATION = r"""
module: patroni_dynamic_config
short_description: Converge the cluster-wide (DCS) settings of a running Patroni cluster
description:
  - Reads C(GET /config) from a member's REST API and, where a key differs from I(config), sends one
    C(PATCH /config) with the desired values. A null value removes the key (Patroni's merge semantics).
  - Keys not named in I(config) are left alone. Supports check mode.
  - It never turns a standby cluster into a primary one or back (the presence of C(standby_cluster)): that is a
    promotion or a demotion, which C(kumiai failover) and C(kumiai failback) carry out in a safe order. When the
    running cluster's role differs from the desired one it fails and says so.
options:
  url:
    description: Base URL of a member's Patroni REST API.
    type: str
    required: true
  config:
    description: Desired values of cluster-wide settings, e.g. standby_cluster, synchronous_mode, slots.
    type: dict
    required: true
  timeout:
    description: Seconds to wait for each request.
    type: int
    default: 10
  ca_path:
    description: CA certificate the REST API's certificate is verified against (HTTPS).
    type: path
  url_username:
    description: User of the REST API's basic authentication (Patroni requires it for PATCH).
    type: str
  url_password:
    description: Password of that user.
    type: str
  force_basic_auth:
    description: Send the credentials with the first request (Patroni does not ask for them).
    type: bool
    default: true
author: kumiai maintainers
"""

RETURN = r"""
differs:
  description: Keys whose running value differed from the desired one.
  type: list
  elements: str
  returned: always
role_mismatch:
  description: True when the running cluster is a standby cluster and the desired one a primary, or the reverse.
  type: bool
  returned: on that failure
"""


def _holds(current, desired) -> bool:
    # A mapping holds when each of its keys does: PATCH merges mappings, so keys the running configuration has
    # besides (e.g. the other PostgreSQL parameters) are no difference.
    if isinstance(desired, dict) and desired:
        return isinstance(current, dict) and all(_holds(current.get(k), v) for k, v in desired.items())
    # An absent key, null, false and an empty mapping all mean "not set".
    return (current or None) == (desired or None)


def _differs(current: dict, desired: dict) -> list:
    return sorted(k for k, v in desired.items() if not _holds(current.get(k), v))


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "config": {"type": "dict", "required": True},
            "timeout": {"type": "int", "default": 10},
            "ca_path": {"type": "path"},
            "url_username": {"type": "str"},
            "url_password": {"type": "str", "no_log": True},
            "force_basic_auth": {"type": "bool", "default": True},
        },
        supports_check_mode=True,
    )
    url = module.params["url"].rstrip("/") + "/config"
    ca_path = module.params["ca_path"]
    resp, info = fetch_url(module, url, timeout=module.params["timeout"], ca_path=ca_path)
    if info["status"] != 200:
        module.fail_json(msg=f"GET {url}: {info.get('msg')} (status {info['status']})")
    current = json.loads(resp.read() or b"{}")
    desired = module.params["config"]
    if "standby_cluster" in desired and bool(current.get("standby_cluster")) != bool(desired["standby_cluster"]):
        running = "a standby cluster" if current.get("standby_cluster") else "a primary cluster"
        module.fail_json(
            msg=f"the cluster is {running} but the town's placement wants the opposite: a promotion or demotion "
            "is a failover (kumiai failover / kumiai failback), never a side effect of converging settings",
            role_mismatch=True,
        )
    differs = _differs(current, desired)
    if differs and not module.check_mode:
        body = json.dumps({k: module.params["config"][k] for k in differs})
        _resp, info = fetch_url(
            module,
            url,
            data=body,
            method="PATCH",
            headers={"Content-Type": "application/json"},
            timeout=module.params["timeout"],
            ca_path=ca_path,
        )
        if info["status"] != 200:
            module.fail_json(msg=f"PATCH {url}: {info.get('msg')} (status {info['status']})", differs=differs)
    module.exit_json(changed=bool(differs), differs=differs)


if __name__ == "__main__":
    main()
