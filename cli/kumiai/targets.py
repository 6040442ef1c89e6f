"""Which target the data layer drives, and the Ansible inventory script every target's playbooks read.

`KUMIAI_TARGET` names it (default `lab`, the only one built so far); a target for real hosts reads its host
inventory instead of deriving addresses from lab slots.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from kumiai.datalayer.ansible_inventory import build_inventory, script_document
from kumiai.datalayer.target import Target
from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.inventory import Inventory, load_inventory

TARGETS = ("lab",)


def target_for(inv: Inventory) -> Target:
    kind = os.environ.get("KUMIAI_TARGET", "lab")
    if kind == "lab":
        from kumiai.lab.target import LabTarget

        return LabTarget(inv)
    raise InputError(Problem("KUMIAI_TARGET", "", f"unknown target {kind!r}; targets are: {', '.join(TARGETS)}"))


def inventory_main(argv: list[str] | None = None) -> int:
    """`kumiai-ansible-inventory --list`: the Ansible inventory of the current target."""
    parser = argparse.ArgumentParser(description="Ansible inventory derived from a kumiai inventory directory.")
    parser.add_argument("--list", action="store_true", help="print the whole inventory")
    parser.add_argument("--host", help="print one host's variables (all are in --list already)")
    args = parser.parse_args(argv)
    try:
        inv = load_inventory(Path(os.environ.get("KUMIAI_INVENTORY", "inventories/lab")))
        target = target_for(inv)
        # The environment running this script holds patroni, supervisord and what the Ansible modules need.
        bin_dir = Path(sys.executable).parent
        data = script_document(build_inventory(inv, target.topology(), bin_dir=bin_dir, python=bin_dir / "python"))
    except KumiaiError as exc:
        print(exc.message, file=sys.stderr)
        return exc.exit_code
    if args.host:
        print(json.dumps(data["_meta"]["hostvars"].get(args.host, {})))
    else:
        print(json.dumps(data, indent=1, sort_keys=True))
    return 0
