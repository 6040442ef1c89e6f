"""Inventory data is data: the attacks tried on a demo lab are refused by every command that reads an inventory.

Each attack puts syntax of another language (Jinja, supervisord's INI, a path) into one field of a copy of
inventories/lab. `town validate`, `plan` and `onboard --dry-run` must all exit 2 naming the file and the field,
write nothing (inventory, state directory, manifests) and run nothing.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_helpers import Result, clean_env, copy_inventory, kumiai, kumiai_in_process, lab_storage, snapshot

# Each payload, were it evaluated or written into a config file, would create this file: its absence shows that
# nothing ran.
MARKER = "PWNED"
JINJA = "{{ lookup('pipe', 'touch " + MARKER + "') }}"
SECTION = "\n[program:pwn]\ncommand=/bin/sh -c 'touch " + MARKER + "'\nautostart=true\n"


@dataclass(frozen=True)
class Attack:
    id: str
    file: str  # relative to the inventory
    old: str  # replaced once in that file, by
    new: str
    field: str  # reported as "<file>: <field>: "

    def apply(self, root: Path) -> None:
        path = root / self.file
        text = path.read_text(encoding="utf-8")
        assert self.old in text, f"{self.old!r} not in {self.file}: the lab inventory changed, update this attack"
        path.write_text(text.replace(self.old, self.new, 1), encoding="utf-8")


def quoted(value: str) -> str:
    """A YAML double-quoted scalar holding value (new lines as \\n)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


CONS = "consortium.yaml"
NAKAI = "towns/nakai.yaml"
SITE_A_STORAGE = lab_storage("site-a")
SITE_B_STORAGE = lab_storage("site-b")
ATTACKS = [
    Attack("jinja-in-consortium-name", CONS, "name: lab", "name: " + quoted(JINJA), "name"),
    Attack("newline-in-consortium-name", CONS, "name: lab", "name: " + quoted("lab\nsites: []"), "name"),
    Attack("supervisord-section-in-consortium-name", CONS, "name: lab", "name: " + quoted("lab" + SECTION), "name"),
    Attack("path-in-consortium-name", CONS, "name: lab", "name: ../../../tmp/x", "name"),
    Attack(
        "supervisord-section-in-site-name",
        CONS,
        "name: 主データセンター (lab)",
        "name: " + quoted("主データセンター" + SECTION),
        "sites[0].name",
    ),
    Attack(
        "jinja-in-kube-context",
        CONS,
        "kube_context: kumiai-lab-site-a",
        "kube_context: " + quoted(JINJA),
        "sites[0].kube_context",
    ),
    Attack(
        "newline-in-site-id",
        CONS,
        "id: site-b",
        "id: " + quoted("site-b\n[program:pwn]"),
        "sites[1].id",
    ),
    Attack(
        "dotdot-storage-path",
        CONS,
        SITE_A_STORAGE,
        "type: posix\n      path: ../../../../etc",
        "sites[0].object_storage.path",
    ),
    Attack(
        "system-storage-path",
        CONS,
        SITE_A_STORAGE,
        "type: posix\n      path: /etc",
        "sites[0].object_storage.path",
    ),
    Attack(
        "below-a-system-storage-path",
        CONS,
        SITE_B_STORAGE,
        "type: posix\n      path: /var/log/kumiai",
        "sites[1].object_storage.path",
    ),
    Attack(
        "jinja-in-bucket-prefix",
        CONS,
        "bucket_prefix: lab-site-a",
        "bucket_prefix: " + quoted(JINJA),
        "sites[0].object_storage.bucket_prefix",
    ),
    Attack(
        "newline-in-s3-endpoint",
        CONS,
        "endpoint: https://127.0.2.3:7443",
        "endpoint: " + quoted("https://127.0.2.3:7443\n[program:pwn]"),
        "sites[1].object_storage.endpoint",
    ),
    Attack(
        "jinja-in-local-system",
        CONS,
        "  - name: 文書管理\n",
        "  - name: " + quoted("文書管理" + JINJA) + "\n",
        "local_systems[1].name",
    ),
    Attack("jinja-in-town-name", NAKAI, "name: 中井町", "name: " + quoted("中井町" + JINJA), "name"),
    Attack("supervisord-section-in-town-name", NAKAI, "name: 中井町", "name: " + quoted("中井町" + SECTION), "name"),
]


def symlinked_town(root: Path) -> None:
    """towns/nakai.yaml replaced by a link to a copy of it elsewhere (a link could point at any file)."""
    town = root / NAKAI
    elsewhere = root.parent / "elsewhere.yaml"
    elsewhere.write_bytes(town.read_bytes())
    town.unlink()
    town.symlink_to(elsewhere)


COMMANDS = {
    "town-validate": ("town", "validate"),
    "plan": ("plan", "--no-validate", "--workers", "1"),
    "onboard-dry-run": ("onboard", "nakai", "--dry-run"),
}


def check_refused(
    tmp_path: Path, breaks: Callable[[Path], None], expect: str, command: tuple[str, ...], run: Callable[..., Result]
) -> None:
    root = copy_inventory(tmp_path / "inv")
    breaks(root)
    (tmp_path / "state").mkdir()
    before = snapshot(tmp_path)

    result = run("--inventory", root, *command)

    assert result.code == 2, result
    assert expect in result.stderr, f"{expect!r} not in:\n{result.stderr}"
    assert "Nothing was changed." in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert snapshot(tmp_path) == before, "something was written"
    assert not list(tmp_path.rglob(MARKER)) and not (Path.cwd() / MARKER).exists(), "a payload ran"


@pytest.fixture
def in_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """kumiai_in_process with only this test's state directory (and the lab's under it)."""
    for name in [n for n in os.environ if n.startswith("KUMIAI_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("KUMIAI_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.chdir(tmp_path)
    return kumiai_in_process


@pytest.mark.parametrize("command", list(COMMANDS.values()), ids=list(COMMANDS))
@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
def test_an_attack_is_refused_by_every_command(
    attack: Attack, command: tuple[str, ...], tmp_path: Path, in_process: Callable[..., Result]
) -> None:
    check_refused(tmp_path, attack.apply, f"inv/{attack.file}: {attack.field}: ", command, in_process)


@pytest.mark.parametrize("command", list(COMMANDS.values()), ids=list(COMMANDS))
def test_a_symlinked_town_file_is_refused_by_every_command(
    command: tuple[str, ...], tmp_path: Path, in_process: Callable[..., Result]
) -> None:
    check_refused(tmp_path, symlinked_town, f"inv/{NAKAI}: (document): is a symbolic link", command, in_process)


# The same through the installed console script, in a fresh process, as a user runs it.
SCRIPT_SAMPLE = ("jinja-in-consortium-name", "supervisord-section-in-town-name", "system-storage-path")


@pytest.mark.parametrize("attack", [a for a in ATTACKS if a.id in SCRIPT_SAMPLE], ids=SCRIPT_SAMPLE)
def test_an_attack_is_refused_by_the_console_script(attack: Attack, tmp_path: Path) -> None:
    env = clean_env(KUMIAI_STATE_DIR=str(tmp_path / "state"))
    run = functools.partial(kumiai, cwd=tmp_path, env=env)
    check_refused(tmp_path, attack.apply, f"inv/{attack.file}: {attack.field}: ", COMMANDS["plan"], run)
