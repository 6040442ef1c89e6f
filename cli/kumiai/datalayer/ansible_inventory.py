"""The Ansible inventory, derived from the models and a target's topology (never a second hand-written copy).

`kumiai-ansible-inventory --list` prints it for ansible-playbook (`-i` takes the executable); see
kumiai.targets for how it finds the inventory directory and the target.

Hosts and groups:
- one service host per site (`site-a`, ...) in group `sites`: its process manager, etcd and backup storage;
- one host per town member (`nakai-site-a-1`, ...) in groups `members`, `primary_members` or `dr_members`
  (by the town's current placement), `town_<id>`, `site_<id>` and `town_<id>_<site>`.
Only towns of the topology (onboarded or being onboarded) have member hosts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kumiai.datalayer.certs import member_tls_vars
from kumiai.datalayer.etcd import etcd_pki, namespace, tls_dir, town_prefix, town_user
from kumiai.datalayer.hostvars import town_vars
from kumiai.datalayer.patroni import desired_config
from kumiai.datalayer.topology import (
    ETCD_CLIENT_PORT,
    ETCD_PEER_PORT,
    MEMBERS_PER_SITE,
    PATRONI_REST_USER,
    PG_PORT,
    REST_PORT,
    RepoLayout,
    Topology,
    group_name,
)
from kumiai.inventory import Inventory
from kumiai.objectstore.lab import lab_store_vars


def build_inventory(
    inv: Inventory,
    topology: Topology,
    *,
    bin_dir: Path,
    python: Path,
    service_manager: str = "supervisor",
    install_packages: bool = False,
) -> dict[str, Any]:
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

    pki = etcd_pki(topology)
    for site in topology.sites:
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
            "kumiai_etcd_cert_file": str(pki.site(site.id).cert),
            "kumiai_etcd_key_file": str(pki.site(site.id).key),
            "kumiai_etcd_tls_dir": str(tls_dir(site)),
            "kumiai_repo_path": str(site.repo_path),
            "kumiai_backup_jobs_dir": str(site.backup_jobs_dir),
            "kumiai_storage_type": "s3" if site.object_store else "posix",
        }
        if site.object_store and site.object_store.run_dir:
            hostvars[site.host]["kumiai_object_store"] = lab_store_vars(site.object_store)
        add("sites", site.host)
        add(f"site_{group_name(site.id)}", site.host)

    for town in topology.towns.values():
        common = town_vars(inv, inv.towns[town.id])
        repos = [repo_vars(topology, r) for r in town.repos]
        for member in town.members:
            site = topology.site(member.site)
            is_primary = member.site == town.primary_site
            hostvars[member.name] = {
                **common,
                "kumiai_site": member.site,
                "kumiai_cluster_mode": "primary" if is_primary else "standby",
                "kumiai_member_name": member.name,
                "kumiai_member_index": member.index,
                "kumiai_member_address": member.address,
                "kumiai_member_dir": str(member.dir),
                "kumiai_data_dir": str(member.data_dir),
                "kumiai_socket_dir": str(member.socket_dir),
                "kumiai_patroni_config": str(member.patroni_config),
                "kumiai_pgbackrest_config": str(member.pgbackrest_config),
                "kumiai_pg_port": PG_PORT,
                "kumiai_rest_port": REST_PORT,
                "kumiai_supervisor_dir": str(site.supervisor_dir),
                "kumiai_backup_jobs_dir": str(site.backup_jobs_dir),
                "kumiai_etcd_hosts": [site.etcd_endpoint],
                "kumiai_etcd_address": site.etcd_address,
                "kumiai_etcd_client_port": ETCD_CLIENT_PORT,
                "kumiai_etcd_namespace": namespace(site.id),
                "kumiai_etcd_user": town_user(town.id),
                "kumiai_etcd_prefix": town_prefix(site.id, town.id),
                "kumiai_etcd_client_cert": str(pki.town(town.id).cert),
                "kumiai_etcd_client_key": str(pki.town(town.id).key),
                "kumiai_site_members": MEMBERS_PER_SITE,
                "kumiai_primary_addresses": [m.address for m in town.at(town.primary_site)],
                "kumiai_dr_slot_name": town.dr_slot_name,
                "kumiai_patroni_dynamic_config": desired_config(town, member.site),
                "kumiai_database": town.database,
                "kumiai_app_user": town.app_user,
                "kumiai_os_user": town.os_user,
                "kumiai_repos": repos,
                "kumiai_secrets_file": str(topology.secrets_file(town.id)),
                # TLS: the member's certificates (issued by kumiai.datalayer.certs); every member's login role
                "kumiai_tls": member_tls_vars(topology, member),
                "kumiai_town_member_names": [m.name for m in town.members],
                "kumiai_patroni_rest_user": PATRONI_REST_USER,
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
            "kumiai_lab_dir": str(topology.dir),
            "kumiai_service_manager": service_manager,
            "kumiai_install_packages": install_packages,
            "kumiai_bin_dir": str(bin_dir),
            # On the controller: the CA every channel is checked against, and etcd's root identity.
            "kumiai_etcd_ca_file": str(pki.ca_file),
            "kumiai_etcd_root_cert": str(pki.root.cert),
            "kumiai_etcd_root_key": str(pki.root.key),
        },
    }
    return {**groups, "_meta": {"hostvars": hostvars}}


def repo_vars(topology: Topology, repo: RepoLayout) -> dict[str, Any]:
    """A repo as the pgbackrest role takes it: posix, or a bucket in the site's object store."""
    store = topology.site(repo.site).object_store
    if store is None:
        return {"number": repo.number, "site": repo.site, "type": "posix", "path": str(repo.path)}
    return {
        "number": repo.number,
        "site": repo.site,
        "type": "s3",
        "path": str(repo.path),
        "bucket": repo.bucket,
        "endpoint": store.host,
        "port": store.port,
        "region": store.region,
        "ca_file": str(store.ca_file) if store.ca_file else None,
    }


def script_document(inventory: dict[str, Any]) -> dict[str, Any]:
    """The inventory as the script prints it: every variable's strings marked unsafe, so Ansible never evaluates
    inventory data as a template. Town and consortium files are data: a value holding `{{ lookup('pipe', ...) }}`
    must reach a task as those characters, never run (Ansible templates the plain strings of a script inventory)."""
    groups = {
        name: {**group, "vars": unsafe(group["vars"])} if "vars" in group else group
        for name, group in inventory.items()
        if name != "_meta"
    }
    return {**groups, "_meta": {"hostvars": unsafe(inventory["_meta"]["hostvars"])}}


def unsafe(value: Any) -> Any:
    """Every string inside `value` wrapped as Ansible's JSON form of an unsafe string."""
    if isinstance(value, str):
        return {"__ansible_unsafe": value}
    if isinstance(value, dict):
        return {k: unsafe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unsafe(v) for v in value]
    return value
