"""The Ansible inventory, derived from the models and the lab's slots (never a second hand-written copy).

`kumiai-ansible-inventory --list` prints it for ansible-playbook (`-i` takes the executable). It reads the
inventory directory named by KUMIAI_INVENTORY (default inventories/lab) and the lab directory
(KUMIAI_LAB_DIR, default .kumiai/lab).

Hosts and groups:
- one service host per site (`site-a`, ...) in group `sites`: its supervisord, etcd and backup storage;
- one host per town member (`nakai-site-a-1`, ...) in groups `members`, `primary_members` or `dr_members`
  (by the town's placement), `town_<id>`, `site_<id>` and `town_<id>_<site>`.
Only towns holding a slot (onboarded or being onboarded) have member hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from kumiai import paths
from kumiai.errors import KumiaiError
from kumiai.inventory import Inventory, load_inventory
from kumiai.lab.layout import (
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    MEMBERS_PER_SITE,
    PG_PORT,
    REPLICATION_USER,
    REST_PORT,
    LabLayout,
    build_layout,
    group_name,
)
from kumiai.lab.slots import read_slots


def build_inventory(inv: Inventory, layout: LabLayout, *, bin_dir: Path, python: Path) -> dict[str, Any]:
    """The `--list` document of Ansible's script inventory format."""
    hostvars: dict[str, dict[str, Any]] = {}
    groups: dict[str, dict[str, Any]] = {
        "sites": {"hosts": []},
        "members": {"hosts": []},
        "primary_members": {"hosts": []},
        "dr_members": {"hosts": []},
    }

    def add(group: str, host: str) -> None:
        groups.setdefault(group, {"hosts": []})["hosts"].append(host)

    for site in layout.sites:
        hostvars[site.host] = {
            "kumiai_site": site.id,
            "kumiai_site_role": site.role,
            "kumiai_supervisor_dir": str(site.supervisor_dir),
            "kumiai_etcd_name": site.etcd_name,
            "kumiai_etcd_address": site.etcd_address,
            "kumiai_etcd_client_port": ETCD_CLIENT_PORT,
            "kumiai_etcd_peer_port": ETCD_PEER_PORT,
            "kumiai_etcd_data_dir": str(site.etcd_data_dir),
            "kumiai_etcd_cluster_token": f"kumiai-{inv.consortium.name}-{site.id}",
            "kumiai_repo_path": str(site.repo_path),
        }
        add("sites", site.host)
        add(f"site_{group_name(site.id)}", site.host)

    for town in layout.towns.values():
        primary = layout.site(town.primary_site)
        repos = [
            {"path": str(layout.site(town.primary_site).repo_path)},
            {"path": str(layout.site(town.dr_site).repo_path)},
        ]
        for member in town.members:
            site = layout.site(member.site)
            is_primary = member.site == town.primary_site
            hostvars[member.name] = {
                "kumiai_town": town.id,
                "kumiai_site": member.site,
                "kumiai_cluster_mode": "primary" if is_primary else "standby",
                "kumiai_member_name": member.name,
                "kumiai_member_address": member.address,
                "kumiai_member_dir": str(member.dir),
                "kumiai_data_dir": str(member.data_dir),
                "kumiai_socket_dir": str(member.socket_dir),
                "kumiai_patroni_config": str(member.patroni_config),
                "kumiai_pgbackrest_config": str(member.pgbackrest_config),
                "kumiai_pg_port": PG_PORT,
                "kumiai_rest_port": REST_PORT,
                "kumiai_supervisor_dir": str(site.supervisor_dir),
                "kumiai_etcd_hosts": [site.etcd_endpoint],
                "kumiai_site_members": MEMBERS_PER_SITE,
                "kumiai_primary_addresses": [m.address for m in town.at(primary.id)],
                "kumiai_dr_slot_name": town.dr_slot_name,
                "kumiai_database": town.database,
                "kumiai_app_user": town.app_user,
                "kumiai_replication_user": REPLICATION_USER,
                "kumiai_repos": repos,
                "kumiai_retention_full": inv.towns[town.id].protection.retention_full,
                "kumiai_secrets_file": str(layout.secrets_file(town.id)),
            }
            add("members", member.name)
            add("primary_members" if is_primary else "dr_members", member.name)
            add(f"town_{group_name(town.id)}", member.name)
            add(f"site_{group_name(member.site)}", member.name)
            add(f"town_{group_name(town.id)}_{group_name(member.site)}", member.name)

    groups["all"] = {
        "children": sorted(g for g in groups if g != "all"),
        "vars": {
            "ansible_connection": "local",
            "ansible_python_interpreter": str(python),
            "kumiai_consortium": inv.consortium.name,
            "kumiai_lab_dir": str(layout.dir),
            "kumiai_service_manager": "supervisor",
            "kumiai_install_packages": False,
            "kumiai_bin_dir": str(bin_dir),
        },
    }
    return {**groups, "_meta": {"hostvars": hostvars}}


def current_inventory() -> dict[str, Any]:
    """The inventory for the environment this process runs in (what ansible-playbook asks for)."""
    inv = load_inventory(Path(os.environ.get("KUMIAI_INVENTORY", "inventories/lab")))
    lab_dir = paths.lab_dir()
    layout = build_layout(lab_dir, inv, read_slots(lab_dir))
    # The virtual environment running this script holds patroni, supervisord and the Ansible modules' needs.
    bin_dir = Path(sys.executable).parent
    return build_inventory(inv, layout, bin_dir=bin_dir, python=bin_dir / "python")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Ansible inventory derived from a kumiai inventory directory.")
    parser.add_argument("--list", action="store_true", help="print the whole inventory")
    parser.add_argument("--host", help="print one host's variables (all are in --list already)")
    args = parser.parse_args(argv)
    try:
        data = current_inventory()
    except KumiaiError as exc:
        print(exc.message, file=sys.stderr)
        return exc.exit_code
    if args.host:
        print(json.dumps(data["_meta"]["hostvars"].get(args.host, {})))
    else:
        print(json.dumps(data, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
