"""Lab addressing and the derived Ansible inventory: pure, derived from the models and the slots."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from pathlib import Path

import pytest

from kumiai.datalayer.ansible_inventory import build_inventory
from kumiai.datalayer.patroni import config_differs, desired_config
from kumiai.errors import KumiaiError
from kumiai.inventory import Inventory, load_inventory
from kumiai.lab.layout import build_layout, lowest_free_slot, max_slots, member_address
from kumiai.lab.slots import assign_slots, read_slots
from kumiai.models import Placement, Tier
from support.lab_inventory import posix_lab_inventory

ROOT = Path(__file__).resolve().parents[2]
LAB = ROOT / "inventories" / "lab"
NET_A = ipaddress.IPv4Network("127.0.1.0/24")


def test_member_addresses_follow_the_slot() -> None:
    assert str(member_address(NET_A, 0, 1)) == "127.0.1.11"
    assert str(member_address(NET_A, 0, 2)) == "127.0.1.12"
    assert str(member_address(NET_A, 3, 1)) == "127.0.1.17"


def test_every_address_of_a_network_is_distinct_and_inside_it() -> None:
    seen = {member_address(NET_A, s, i) for s in range(max_slots(NET_A)) for i in (1, 2)}
    assert len(seen) == 2 * max_slots(NET_A)
    assert all(a in NET_A and a != NET_A.broadcast_address for a in seen)
    assert NET_A.network_address + 1 not in seen  # etcd's address


def test_a_slot_outside_the_network_is_refused() -> None:
    with pytest.raises(KumiaiError):
        member_address(ipaddress.IPv4Network("127.0.1.0/28"), 2, 1)


def test_lowest_free_slot_fills_holes() -> None:
    assert lowest_free_slot(set()) == 0
    assert lowest_free_slot({0, 1, 3}) == 2


def test_slots_are_stable_when_towns_are_added(tmp_path: Path) -> None:
    first = assign_slots(tmp_path, ["nakai", "oi"])
    later = assign_slots(tmp_path, ["kaisei", "nakai"])
    assert later["nakai"] == first["nakai"] and later["oi"] == first["oi"]
    assert later["kaisei"] not in (first["nakai"], first["oi"])
    assert read_slots(tmp_path) == later


def test_layout_keeps_existing_addresses_when_a_town_is_added(tmp_path: Path) -> None:
    inv = load_inventory(LAB)
    before = build_layout(tmp_path, inv, {"nakai": 0})
    after = build_layout(tmp_path, inv, {"nakai": 0, "kiyokawa": 1})
    assert before.towns["nakai"] == after.towns["nakai"]
    addresses = [m.address for t in after.towns.values() for m in t.members]
    assert len(addresses) == len(set(addresses)) == 8


def test_each_member_has_its_own_directories_and_socket(tmp_path: Path) -> None:
    inv = load_inventory(LAB)
    layout = build_layout(tmp_path, inv, {"nakai": 0, "kiyokawa": 1})
    members = [m for t in layout.towns.values() for m in t.members]
    assert len({m.data_dir for m in members}) == len({m.socket_dir for m in members}) == len(members)
    # PostgreSQL's socket path limit (107 bytes) with a realistic lab directory.
    assert all(len(str(m.socket_dir / ".s.PGSQL.5432")) < 107 for m in members)


def test_ansible_inventory_groups_and_vars(tmp_path: Path) -> None:
    inv = load_inventory(posix_lab_inventory(tmp_path / "posix"))
    layout = build_layout(tmp_path, inv, {"nakai": 0})
    data = build_inventory(inv, layout, bin_dir=Path("/venv/bin"), python=Path("/venv/bin/python"))
    json.dumps(data)  # what ansible reads
    assert sorted(data["sites"]["hosts"]) == ["site-a", "site-b"]
    assert sorted(data["primary_members"]["hosts"]) == ["nakai-site-a-1", "nakai-site-a-2"]
    assert sorted(data["dr_members"]["hosts"]) == ["nakai-site-b-1", "nakai-site-b-2"]
    assert sorted(data["town_nakai"]["hosts"]) == sorted(data["members"]["hosts"])
    hv = data["_meta"]["hostvars"]
    assert hv["site-a"]["kumiai_etcd_address"] == "127.0.1.1"
    assert hv["site-b"]["kumiai_etcd_address"] == "127.0.2.1"
    standby = hv["nakai-site-b-1"]
    assert standby["kumiai_cluster_mode"] == "standby"
    assert standby["kumiai_primary_addresses"] == ["127.0.1.11", "127.0.1.12"]
    assert standby["kumiai_etcd_hosts"] == ["127.0.2.1:2379"]
    assert [r["path"] for r in standby["kumiai_repos"]] == [
        str(tmp_path / "site-a/backup/nakai"),
        str(tmp_path / "site-b/backup/nakai"),
    ]
    assert hv["site-a"]["kumiai_repo_path"] == str(tmp_path / "site-a/backup")
    assert standby["kumiai_retention_full"] == inv.towns["nakai"].protection.retention_full
    # Nothing secret is in the inventory: only the path of the town's vault.
    assert not any("password" in k or "cipher" in k for h in hv.values() for k in h)


def test_every_member_host_names_its_towns_os_user(tmp_path: Path) -> None:
    inv = load_inventory(LAB)
    layout = build_layout(tmp_path, inv, {"nakai": 0, "kiyokawa": 1})
    hv = build_inventory(inv, layout, bin_dir=Path("/b"), python=Path("/b/python"))["_meta"]["hostvars"]
    users = {h: v["kumiai_os_user"] for h, v in hv.items() if "kumiai_os_user" in v}
    assert users == {
        **{f"nakai-site-{s}-{i}": "kumiai-nakai" for s in "ab" for i in (1, 2)},
        **{f"kiyokawa-site-{s}-{i}": "kumiai-kiyokawa" for s in "ab" for i in (1, 2)},
    }
    assert layout.towns["nakai"].os_user == "kumiai-nakai"
    # Site hosts run no town's processes: no town user there.
    assert "kumiai_os_user" not in hv["site-a"]


def test_each_towns_posix_repo_is_a_directory_of_its_own(tmp_path: Path) -> None:
    inv = load_inventory(posix_lab_inventory(tmp_path / "posix"))
    layout = build_layout(tmp_path, inv, {"nakai": 0, "kiyokawa": 1})
    paths = [r.path for t in layout.towns.values() for r in t.repos]
    assert len(set(paths)) == len(paths) == 4
    assert all(r.path == layout.site(r.site).repo_path / t.id for t in layout.towns.values() for r in t.repos)


def test_towns_without_a_slot_have_no_hosts(tmp_path: Path) -> None:
    inv = load_inventory(LAB)
    data = build_inventory(inv, build_layout(tmp_path, inv, {}), bin_dir=Path("/b"), python=Path("/b/python"))
    assert data["members"]["hosts"] == []


def test_a_lab_directory_the_town_users_cannot_reach_is_refused(tmp_path: Path) -> None:
    from kumiai.lab.lifecycle import check_lab_dir

    closed = tmp_path / "closed"
    closed.mkdir(mode=0o700)
    with pytest.raises(KumiaiError, match="cannot enter"):
        check_lab_dir(closed / "lab")


def test_onboarding_input_is_checked_before_anything_starts(tmp_path: Path) -> None:
    from kumiai.datalayer.onboard import check_towns
    from kumiai.errors import InputError
    from kumiai.lab.target import LabTarget

    inv = load_inventory(LAB)
    check_towns(inv, ["nakai", "kiyokawa"])
    with pytest.raises(InputError) as err:
        check_towns(inv, ["nakai", "atlantis", "lemuria"])
    assert len(err.value.problems) == 2 and err.value.exit_code == 2
    target = LabTarget(inv, tmp_path)
    target.check_capacity(["nakai"])
    # More towns than a site network holds: refused up front.
    assign_slots(tmp_path, [f"t{i}" for i in range(max_slots(NET_A))])
    with pytest.raises(InputError, match="room for"):
        target.check_capacity(["nakai"])


def _failed_over(inv: Inventory, town_id: str) -> Inventory:
    """The inventory after a failover of one town to site-b (its placement swapped)."""
    town = inv.towns[town_id].model_copy(update={"placement": Placement(primary="site-b", dr="site-a")})
    return dataclasses.replace(inv, towns={**inv.towns, town_id: town})


def test_repos_are_numbered_by_site_and_a_failover_keeps_the_numbers(tmp_path: Path) -> None:
    inv = load_inventory(posix_lab_inventory(tmp_path / "posix"))
    before = build_layout(tmp_path, inv, {"nakai": 0}).towns["nakai"]
    after = build_layout(tmp_path, _failed_over(inv, "nakai"), {"nakai": 0}).towns["nakai"]
    assert (after.primary_site, after.dr_site) == ("site-b", "site-a")
    expected = [(1, "site-a", tmp_path / "site-a/backup/nakai"), (2, "site-b", tmp_path / "site-b/backup/nakai")]
    assert [(r.number, r.site, r.path) for r in before.repos] == expected
    assert [(r.number, r.site, r.path) for r in after.repos] == expected
    # Members keep their addresses and directories: only their roles change.
    assert before.members == after.members


def test_cluster_settings_follow_the_placement(tmp_path: Path) -> None:
    inv = load_inventory(LAB)
    town = build_layout(tmp_path, inv, {"nakai": 0}).towns["nakai"]
    # nakai is a tier s town: 512 MB of WAL kept for the DR slot at most, checkpoints every 512 MB.
    wal = {"parameters": {"max_slot_wal_keep_size": "512MB", "max_wal_size": "512MB"}}
    assert desired_config(town, "site-a") == {
        "standby_cluster": None,
        "synchronous_mode": True,
        "slots": {"kumiai_dr_site_b": {"type": "physical"}},
        "ignore_slots": [{"name": "kumiai_dr_site_b", "type": "physical"}],
        "postgresql": wal,
    }
    assert desired_config(town, "site-b") == {
        "standby_cluster": {
            "host": "127.0.1.11,127.0.1.12",
            "port": 5432,
            "primary_slot_name": "kumiai_dr_site_b",
            "create_replica_methods": ["basebackup"],
        },
        "synchronous_mode": False,
        "slots": None,
        "ignore_slots": None,
        "postgresql": wal,
    }
    swapped = build_layout(tmp_path, _failed_over(inv, "nakai"), {"nakai": 0}).towns["nakai"]
    assert desired_config(swapped, "site-b")["slots"] == {"kumiai_dr_site_a": {"type": "physical"}}
    assert desired_config(swapped, "site-a")["standby_cluster"]["host"] == "127.0.2.11,127.0.2.12"
    assert desired_config(swapped, "site-a")["standby_cluster"]["primary_slot_name"] == "kumiai_dr_site_a"


def test_config_differs_names_only_what_must_change() -> None:
    desired = {"standby_cluster": None, "synchronous_mode": True, "slots": {"s": {"type": "physical"}}}
    running = {"ttl": 20, "synchronous_mode": True, "slots": {"s": {"type": "physical"}}}
    assert config_differs(running, desired) == []
    assert config_differs({**running, "standby_cluster": {"host": "x"}}, desired) == ["standby_cluster"]
    assert config_differs({"synchronous_mode": False}, desired) == ["slots", "synchronous_mode"]
    # An absent key, false and null are one thing to Patroni.
    assert config_differs({}, {"synchronous_mode": False, "slots": None}) == []


def test_config_differs_compares_mappings_key_by_key() -> None:
    # PATCH merges mappings: parameters the cluster has besides the desired ones are no difference, a wrong or
    # missing one is.
    desired = {"postgresql": {"parameters": {"max_slot_wal_keep_size": "512MB"}}}
    running = {
        "postgresql": {"use_slots": True, "parameters": {"max_slot_wal_keep_size": "512MB", "wal_level": "replica"}}
    }
    assert config_differs(running, desired) == []
    assert config_differs({"postgresql": {"parameters": {"max_slot_wal_keep_size": "4096MB"}}}, desired) == [
        "postgresql"
    ]
    assert config_differs({"postgresql": {"use_slots": True}}, desired) == ["postgresql"]
    assert config_differs({}, desired) == ["postgresql"]


def test_the_wal_bound_follows_the_towns_tier(tmp_path: Path) -> None:
    inv = load_inventory(LAB)
    nakai = inv.towns["nakai"]
    for tier, keep, wal_size in (
        (Tier.s, "512MB", "512MB"),
        (Tier.m, "4096MB", "1024MB"),
        (Tier.l, "16384MB", "2048MB"),
    ):
        town = dataclasses.replace(inv, towns={**inv.towns, "nakai": nakai.model_copy(update={"tier": tier})})
        layout = build_layout(tmp_path, town, {"nakai": 0}).towns["nakai"]
        parameters = desired_config(layout, "site-a")["postgresql"]["parameters"]
        assert parameters == {"max_slot_wal_keep_size": keep, "max_wal_size": wal_size}


def test_the_ansible_inventory_follows_a_failover(tmp_path: Path) -> None:
    inv = _failed_over(load_inventory(LAB), "nakai")
    data = build_inventory(inv, build_layout(tmp_path, inv, {"nakai": 0}), bin_dir=Path("/b"), python=Path("/b/p"))
    assert sorted(data["primary_members"]["hosts"]) == ["nakai-site-b-1", "nakai-site-b-2"]
    hv = data["_meta"]["hostvars"]
    assert hv["nakai-site-a-1"]["kumiai_cluster_mode"] == "standby"
    assert hv["nakai-site-a-1"]["kumiai_primary_addresses"] == ["127.0.2.11", "127.0.2.12"]
    assert [r["number"] for r in hv["nakai-site-a-1"]["kumiai_repos"]] == [1, 2]
    assert hv["nakai-site-a-1"]["kumiai_patroni_dynamic_config"]["standby_cluster"]["primary_slot_name"] == (
        "kumiai_dr_site_a"
    )


def test_the_lab_refuses_a_repo_outside_its_directory(tmp_path: Path) -> None:
    from kumiai.errors import InputError

    inv = load_inventory(LAB)
    site = inv.consortium.sites[1].model_copy(
        update={
            "object_storage": inv.consortium.sites[1].object_storage.model_copy(
                update={"type": "posix", "path": "/srv/repo"}
            )
        }
    )
    consortium = inv.consortium.model_copy(update={"sites": [inv.consortium.sites[0], site]})
    with pytest.raises(InputError, match=r"sites\[1\]\.object_storage\.path: the lab keeps repos under its directory"):
        build_layout(tmp_path, dataclasses.replace(inv, consortium=consortium), {})
