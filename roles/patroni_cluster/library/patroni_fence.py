#!/usr/bin/python
"""Ansible module: fence a returning site's Patroni cluster in its own DCS before its Patroni starts."""

from __future__ import annotations

import base64
import json

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import fetch_url

DOCUMENTATION = r"""
module: patroni_fence
short_description: Make a site that was primary come back as a standby cluster, before its Patroni starts
description:
  - After an emergency failover the old primary site still holds, in its own etcd, a cluster-wide configuration
    without C(standby_cluster): started as it is, its Patroni promotes itself and takes writes while the other
    site is primary (a split brain).
  - Run for a member whose site the town's placement makes a standby, before that member's Patroni starts. When
    the member's Patroni is not running and the site's DCS configuration says primary, the configuration key is
    rewritten (the same settings, C(slots) removed, C(standby_cluster) as given) provided the placement's primary
    site has a running leader; otherwise the module fails and the member must not be started.
  - Nothing is changed when the member's Patroni already runs (a running cluster is never changed behind its
    back), when the site has no configuration yet (first bootstrap) or when it is a standby cluster already.
    The rewrite is a compare-and-swap on the key's revision, so members of one site can run it together.
options:
  etcd_url:
    description: Base URL of the site's etcd (its v3 JSON gateway), e.g. https://127.0.1.1:2379.
    type: str
    required: true
  ca_path:
    description: CA certificate etcd's certificate is checked against (https).
    type: path
  client_cert:
    description: Client certificate presented to etcd (it refuses connections without one).
    type: path
  client_key:
    description: Its private key.
    type: path
  username:
    description: etcd user (the town's, whose role reaches the key); etcd's JSON gateway authenticates by password.
    type: str
  password:
    description: Its password.
    type: str
  key:
    description: The cluster's configuration key, Patroni's namespace + scope + C(/config).
    type: str
    required: true
  standby_cluster:
    description: The C(standby_cluster) section to set (host, port, primary_slot_name, create_replica_methods).
    type: dict
    required: true
  member_url:
    description: This member's Patroni REST API; when it answers, nothing is done.
    type: str
    required: true
  primary_urls:
    description: Patroni REST APIs of the primary site's members (any one answers for the cluster there).
    type: list
    elements: str
    required: true
  timeout:
    description: Seconds to wait for each request.
    type: int
    default: 5
  rest_ca_path:
    description: CA certificate the members' REST API certificates are verified against (HTTPS).
    type: path
author: kumiai maintainers
"""

RETURN = r"""
state:
  description: running, not_bootstrapped, standby, or fenced (the key was rewritten, or would be in check mode).
  type: str
  returned: success
"""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _post(module: AnsibleModule, url: str, body: dict, token: str | None = None) -> dict | None:
    resp, info = fetch_url(
        module,
        url,
        data=json.dumps(body),
        method="POST",
        headers={"Content-Type": "application/json", **({"Authorization": token} if token else {})},
        timeout=module.params["timeout"],
        ca_path=module.params["ca_path"],
    )
    if info["status"] != 200:
        module.fail_json(msg=f"POST {url}: {_error(info)} (status {info['status']})")
    return json.loads(resp.read() or b"{}")


def _error(info: dict) -> str:
    """etcd's own reason (e.g. permission denied) when it gave one, else the transport's."""
    try:
        return json.loads(info.get("body") or b"{}").get("error") or info.get("msg")
    except (ValueError, AttributeError):
        return info.get("msg")


def _etcd(module: AnsibleModule, api: str, body: dict) -> dict | None:
    """A call to etcd's v3 JSON gateway, authenticated as the given user when there is one."""
    base = module.params["etcd_url"].rstrip("/")
    token = None
    if module.params["username"]:
        auth = {"name": module.params["username"], "password": module.params["password"] or ""}
        token = (_post(module, base + "/v3/auth/authenticate", auth) or {}).get("token")
    return _post(module, base + api, body, token)


def _read(module: AnsibleModule) -> tuple[dict | None, str]:
    """The configuration in the site's DCS (None: none) and the key's revision."""
    data = _etcd(module, "/v3/kv/range", {"key": _b64(module.params["key"])})
    kvs = (data or {}).get("kvs") or []
    if not kvs:
        return None, "0"
    return json.loads(base64.b64decode(kvs[0]["value"]) or b"{}"), str(kvs[0].get("mod_revision", "0"))


def _answers(module: AnsibleModule, url: str) -> dict | None:
    resp, info = fetch_url(module, url, timeout=module.params["timeout"], ca_path=module.params["rest_ca_path"])
    if info["status"] != 200 or resp is None:
        return None
    try:
        return json.loads(resp.read() or b"{}")
    except ValueError:
        return None


def _primary_has_leader(module: AnsibleModule) -> bool:
    for url in module.params["primary_urls"]:
        view = _answers(module, url.rstrip("/") + "/cluster")
        if view is not None:
            return any(m.get("role") == "leader" and m.get("state") == "running" for m in view.get("members", []))
    return False


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "etcd_url": {"type": "str", "required": True},
            "ca_path": {"type": "path"},
            "client_cert": {"type": "path"},
            "client_key": {"type": "path"},
            "username": {"type": "str"},
            "password": {"type": "str", "no_log": True},
            "key": {"type": "str", "required": True},
            "standby_cluster": {"type": "dict", "required": True},
            "member_url": {"type": "str", "required": True},
            "primary_urls": {"type": "list", "elements": "str", "required": True},
            "timeout": {"type": "int", "default": 5},
            "rest_ca_path": {"type": "path"},
        },
        supports_check_mode=True,
    )
    if _answers(module, module.params["member_url"].rstrip("/") + "/patroni") is not None:
        module.exit_json(changed=False, state="running")
    config, revision = _read(module)
    if config is None:
        module.exit_json(changed=False, state="not_bootstrapped")
    if config.get("standby_cluster"):
        module.exit_json(changed=False, state="standby")
    if not _primary_has_leader(module):
        module.fail_json(
            msg="this site's DCS says its cluster is primary, the town's placement makes it a standby, and the "
            "placement's primary site has no running leader: starting it could make two primaries, so it is not "
            "started (fail the town over first, or bring the primary site back)"
        )
    fenced = {k: v for k, v in config.items() if k != "slots"}
    fenced["standby_cluster"] = module.params["standby_cluster"]
    if not module.check_mode:
        key = _b64(module.params["key"])
        txn = {
            "compare": [{"key": key, "target": "MOD", "mod_revision": revision}],
            "success": [{"request_put": {"key": key, "value": _b64(json.dumps(fenced, separators=(",", ":")))}}],
        }
        result = _etcd(module, "/v3/kv/txn", txn)
        if not (result or {}).get("succeeded"):
            # Another member of this site fenced it first, or something else changed it: look again.
            config, _revision = _read(module)
            if not (config or {}).get("standby_cluster"):
                module.fail_json(msg=f"the configuration key {module.params['key']} changed while fencing it")
            module.exit_json(changed=False, state="standby")
    module.exit_json(changed=True, state="fenced")


if __name__ == "__main__":
    main()
