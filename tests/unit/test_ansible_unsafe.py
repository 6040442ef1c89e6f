"""Inventory data reaches Ansible as data: a template in a town or consortium value is never evaluated."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from kumiai.datalayer.ansible_inventory import build_inventory, script_document
from kumiai.inventory import load_inventory
from kumiai.lab.layout import build_layout

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _inventory(tmp_path: Path) -> dict:
    inv = load_inventory(ROOT / "inventories" / "lab")
    return build_inventory(inv, build_layout(tmp_path, inv, {"nakai": 0}), bin_dir=BIN, python=Path(sys.executable))


def _strings(value: object) -> list[object]:
    """Every string leaf, and every unsafe wrapper, of a document."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return [value]
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_every_variable_string_is_marked_unsafe_and_host_names_are_not(tmp_path: Path) -> None:
    plain = _inventory(tmp_path)
    doc = script_document(plain)
    variables = [doc["_meta"]["hostvars"], doc["all"]["vars"]]
    leaves = _strings(variables)
    assert leaves and all(isinstance(leaf, dict) for leaf in leaves)
    assert doc["members"]["hosts"] == plain["members"]["hosts"]
    assert all(isinstance(h, str) for g in doc.values() if "hosts" in g for h in g["hosts"])
    assert doc["_meta"]["hostvars"]["nakai-site-a-1"]["kumiai_town"] == {"__ansible_unsafe": "nakai"}
    assert doc["_meta"]["hostvars"]["nakai-site-a-1"]["kumiai_member_index"] == 1


def test_ansible_does_not_run_a_lookup_hidden_in_inventory_data(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    payload = "{{ lookup('pipe', 'touch " + str(pwned) + "') }}"
    plain = _inventory(tmp_path)
    plain["_meta"]["hostvars"]["nakai-site-a-1"]["kumiai_database"] = payload
    plain["all"]["vars"]["kumiai_consortium"] = payload
    script = tmp_path / "inventory.py"
    script.write_text(f"#!{sys.executable}\nprint({json.dumps(json.dumps(script_document(plain)))})\n")
    script.chmod(0o755)
    out = tmp_path / "out.txt"
    playbook = tmp_path / "show.yml"
    playbook.write_text(
        "- hosts: nakai-site-a-1\n  gather_facts: false\n  tasks:\n"
        f'    - ansible.builtin.copy:\n        content: "{{{{ kumiai_database }}}}|{{{{ kumiai_consortium }}}}"\n'
        f"        dest: {out}\n        mode: '0600'\n"
    )
    run = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", str(script), str(playbook)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": f"{BIN}:/usr/bin:/bin", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "HOME": str(tmp_path)},
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert not pwned.exists()
    assert out.read_text() == f"{payload}|{payload}"
