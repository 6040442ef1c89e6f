#!/usr/bin/python
"""Ansible module: etcd authentication and a town's etcd user and role, through etcdctl as root."""

from __future__ import annotations

import base64
import json

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: etcd_access
short_description: Turn on etcd authentication, or reconcile one town's etcd user and role
description:
  - Runs etcdctl (v3 API, gRPC) with the root identity, a client certificate whose CN is C(root); etcd takes the
    CN as the user name over gRPC. Run it where that certificate is, the controller.
  - C(state=auth_enabled) creates the user C(root) without a password (only the certificate authenticates it) and
    turns authentication on.
  - C(state=present) makes C(role) grant readwrite on C(prefix) and nothing else, and C(user) hold exactly that
    role and C(password). C(state=absent) deletes the user and the role (offboarding).
  - Idempotent, and check mode changes nothing (it reports what would change).
options:
  endpoint:
    description: The etcd member's client URL, e.g. https://127.0.1.1:2379.
    type: str
    required: true
  ca_file:
    description: CA certificate the member's certificate is checked against.
    type: path
    required: true
  cert_file:
    description: The root client certificate (CN=root).
    type: path
    required: true
  key_file:
    description: Its private key.
    type: path
    required: true
  etcdctl:
    description: Path of etcdctl (3.4 or later).
    type: path
    default: /usr/bin/etcdctl
  state:
    description: auth_enabled, present or absent.
    type: str
    choices: [auth_enabled, present, absent]
    default: present
  user:
    description: The town's etcd user (state present or absent).
    type: str
  role:
    description: The town's etcd role (state present or absent).
    type: str
  password:
    description: The user's password (state present).
    type: str
  prefix:
    description: The key prefix the role may read and write (state present).
    type: str
author: kumiai maintainers
"""

RETURN = r"""
actions:
  description: What was changed (or would be, in check mode).
  type: list
  elements: str
  returned: always
"""

READWRITE = 2
NOT_FOUND = ("user name not found", "role name not found")


class Etcdctl:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        p = module.params
        self.base = [
            p["etcdctl"],
            f"--endpoints={p['endpoint']}",
            f"--cacert={p['ca_file']}",
            f"--cert={p['cert_file']}",
            f"--key={p['key_file']}",
            "--dial-timeout=10s",
            "--command-timeout=30s",
        ]

    def run(self, *args: str, stdin: str | None = None, user: str | None = None) -> tuple[int, str, str]:
        # A user and password go through the environment, never the command line (visible to every user).
        env = {"ETCDCTL_API": "3", **({"ETCDCTL_USER": user} if user else {})}
        return self.module.run_command([*self.base, *args], data=stdin, environ_update=env, binary_data=True)

    def must(self, *args: str, stdin: str | None = None) -> str:
        rc, out, err = self.run(*args, stdin=stdin)
        if rc != 0:
            self.module.fail_json(msg=f"etcdctl {args[0]} {args[1] if len(args) > 1 else ''}: {_last_line(err)}")
        return out

    def get_json(self, kind: str, name: str) -> dict | None:
        """`etcdctl user|role get NAME -w json`, None when it does not exist."""
        rc, out, err = self.run(kind, "get", name, "-w", "json")
        if rc != 0:
            if any(text in err for text in NOT_FOUND):
                return None
            self.module.fail_json(msg=f"etcdctl {kind} get {name}: {_last_line(err)}")
        return json.loads(out)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "failed"


def _b64decode(value: str) -> str:
    return base64.b64decode(value or "").decode()


def auth_enabled(ctl: Etcdctl, check: bool) -> list[str]:
    # With authentication on, made-up credentials are refused; with it off, etcd does not look at them.
    rc, _out, err = ctl.run("get", "kumiai-auth-probe", user="kumiai-auth-probe:-")
    if rc != 0 and "authentication failed" in err:
        return []
    if rc != 0:
        if check:  # etcd not running yet (a first run in check mode): authentication would be turned on
            return ["enable authentication"]
        ctl.module.fail_json(msg=f"etcdctl at {ctl.module.params['endpoint']}: {_last_line(err)}")
    actions = []
    root = ctl.get_json("user", "root")
    if root is None:
        actions.append("add user root")
        if not check:
            ctl.must("user", "add", "root", "--no-password")
    if "root" not in (root or {}).get("roles", []):
        actions.append("grant role root to root")
        if not check:
            ctl.must("user", "grant-role", "root", "root")
    actions.append("enable authentication")
    if not check:
        ctl.must("auth", "enable")
    return actions


def present(ctl: Etcdctl, check: bool) -> list[str]:
    p = ctl.module.params
    user, role, password, prefix = p["user"], p["role"], p["password"], p["prefix"]
    end = prefix.encode()
    end = (end[:-1] + bytes([end[-1] + 1])).decode()
    actions = []
    current = ctl.get_json("role", role)
    if current is None:
        actions.append(f"add role {role}")
        if not check:
            ctl.must("role", "add", role)
    perms = [
        (int(perm.get("permType", 0)), _b64decode(perm.get("key", "")), _b64decode(perm.get("range_end", "")))
        for perm in (current or {}).get("perm") or []
    ]
    for _type, key, key_end in perms:
        if (_type, key, key_end) != (READWRITE, prefix, end):
            actions.append(f"revoke {key}..{key_end} from role {role}")
            if not check:
                ctl.must("role", "revoke-permission", role, key, key_end)
    if (READWRITE, prefix, end) not in perms:
        actions.append(f"grant readwrite on {prefix} to role {role}")
        if not check:
            ctl.must("role", "grant-permission", "--prefix=true", role, "readwrite", prefix)
    account = ctl.get_json("user", user)
    if account is None:
        actions.append(f"add user {user}")
        if not check:
            ctl.must("user", "add", user, "--interactive=false", stdin=password + "\n")
    else:
        # The password is right when the user can authenticate with it (etcd never shows a password).
        rc, _out, err = ctl.run("get", "--keys-only", "--limit=1", prefix, user=f"{user}:{password}")
        if rc != 0 and "authentication failed" in err:
            actions.append(f"set the password of {user}")
            if not check:
                ctl.must("user", "passwd", user, "--interactive=false", stdin=password + "\n")
        elif rc != 0 and "permission denied" not in err:
            ctl.module.fail_json(msg=f"etcdctl get as {user}: {_last_line(err)}")
    roles = (account or {}).get("roles") or []
    for other in roles:
        if other != role:
            actions.append(f"revoke role {other} from {user}")
            if not check:
                ctl.must("user", "revoke-role", user, other)
    if role not in roles:
        actions.append(f"grant role {role} to {user}")
        if not check:
            ctl.must("user", "grant-role", user, role)
    return actions


def absent(ctl: Etcdctl, check: bool) -> list[str]:
    p = ctl.module.params
    actions = []
    if ctl.get_json("user", p["user"]) is not None:
        actions.append(f"delete user {p['user']}")
        if not check:
            ctl.must("user", "delete", p["user"])
    if ctl.get_json("role", p["role"]) is not None:
        actions.append(f"delete role {p['role']}")
        if not check:
            ctl.must("role", "delete", p["role"])
    return actions


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "endpoint": {"type": "str", "required": True},
            "ca_file": {"type": "path", "required": True},
            "cert_file": {"type": "path", "required": True},
            "key_file": {"type": "path", "required": True},
            "etcdctl": {"type": "path", "default": "/usr/bin/etcdctl"},
            "state": {"type": "str", "choices": ["auth_enabled", "present", "absent"], "default": "present"},
            "user": {"type": "str"},
            "role": {"type": "str"},
            "password": {"type": "str", "no_log": True},
            "prefix": {"type": "str"},
        },
        required_if=[
            ("state", "present", ("user", "role", "password", "prefix")),
            ("state", "absent", ("user", "role")),
        ],
        supports_check_mode=True,
    )
    ctl = Etcdctl(module)
    state = module.params["state"]
    if state == "present" and not module.params["prefix"].endswith("/"):
        module.fail_json(msg=f"prefix {module.params['prefix']!r} must end with '/' (else it reaches other keys)")
    step = {"auth_enabled": auth_enabled, "present": present, "absent": absent}[state]
    actions = step(ctl, module.check_mode)
    module.exit_json(changed=bool(actions), actions=actions)


if __name__ == "__main__":
    main()
