"""`kumiai town list/show/validate/new` and the global options, through the installed console script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import KANAGAWA, LAB, ROOT, clean_env, copy_inventory, kumiai, kumiai_in_process, snapshot

from kumiai import __version__
from kumiai.inventory import load_inventory
from kumiai.models import with_check_digit

# A town that is not in the lab inventory: 山北町.
NEW_ID, NEW_NAME, NEW_CODE = "yamakita", "山北町", "143642"


@pytest.fixture
def inv(tmp_path: Path) -> Path:
    return copy_inventory(tmp_path / "inv")


# --- --json: only JSON on stdout


@pytest.mark.parametrize(
    "args",
    [("town", "list", "--json"), ("town", "show", "nakai", "--json"), ("town", "validate", "--json")],
    ids=["list", "show", "validate"],
)
def test_json_output_is_only_json(args: tuple[str, ...]) -> None:
    result = kumiai("--inventory", LAB, *args)
    assert result.code == 0, result
    json.loads(result.stdout)  # the whole of stdout is one document
    assert result.stderr == ""


def test_list_json() -> None:
    data = json.loads(kumiai("--inventory", LAB, "town", "list", "--json").stdout)
    assert data["consortium"] == "lab"
    assert [t["id"] for t in data["towns"]] == ["kiyokawa", "manazuru", "nakai"]
    kiyokawa = data["towns"][0]
    assert kiyokawa == {
        "id": "kiyokawa",
        "name": "清川村",
        "code": "144029",
        "population": 2900,
        "tier": "s",
        "isolation": "namespace",
        "segments": ["mynumber", "lgwan", "internet"],
        "systems": 5,
    }


def test_show_json_applies_defaults_and_placement() -> None:
    data = json.loads(kumiai("--inventory", LAB, "town", "show", "manazuru", "--json").stdout)
    # manazuru overrides only rpo_seconds; the rest comes from consortium.yaml's defaults.
    assert data["protection"] == {
        "backup_schedule": "0 2 * * *",
        "retention_full": 7,
        "rpo_seconds": 60,
        "rto_seconds": 3600,
        "immutable_days": 30,
    }
    assert data["placement"] == {"primary": "site-a", "dr": "site-b"}
    assert data["tier"] == "s"


def test_validate_json_ok() -> None:
    data = json.loads(kumiai("--inventory", LAB, "town", "validate", "--json").stdout)
    assert data == {"ok": True, "consortium": "lab", "towns": 3, "sites": ["site-a", "site-b"]}


def test_human_output() -> None:
    listed = kumiai("--inventory", LAB, "town", "list")
    assert listed.code == 0
    assert "清川村" in listed.stdout and "144029" in listed.stdout
    shown = kumiai("--inventory", LAB, "town", "show", "kiyokawa")
    assert shown.code == 0
    assert "清川村 (kiyokawa, 団体コード 144029" in shown.stdout
    assert "internet (インターネット接続系): 電子申請" in shown.stdout


def test_show_unknown_town_names_the_known_ids() -> None:
    result = kumiai("--inventory", LAB, "town", "show", "atlantis")
    assert result.code == 2
    assert "no town 'atlantis' in this inventory; known: kiyokawa, manazuru, nakai" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_show_unknown_town_with_json_keeps_stdout_clean() -> None:
    result = kumiai("--inventory", LAB, "town", "show", "atlantis", "--json")
    assert result.code == 2
    assert result.stdout == ""
    assert "known: kiyokawa, manazuru, nakai" in result.stderr


# --- global options


def test_version() -> None:
    result = kumiai("--version")
    assert result.code == 0
    assert result.stdout.strip() == f"kumiai {__version__}"


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help(flag: str) -> None:
    result = kumiai(flag)
    assert result.code == 0
    for word in ("--inventory", "--version", "town"):
        assert word in result.stdout


def test_town_new_help() -> None:
    result = kumiai("town", "new", "-h")
    assert result.code == 0
    assert "--name" in result.stdout and "--code" in result.stdout


def test_default_inventory_is_lab() -> None:
    data = json.loads(kumiai("town", "validate", "--json", cwd=ROOT).stdout)
    assert data["consortium"] == "lab"


def test_env_var_selects_the_inventory() -> None:
    result = kumiai("town", "list", "--json", env=clean_env(KUMIAI_INVENTORY=str(KANAGAWA)))
    assert result.code == 0
    assert json.loads(result.stdout)["consortium"] == "kanagawa"


def test_option_wins_over_env_var() -> None:
    result = kumiai("--inventory", LAB, "town", "list", "--json", env=clean_env(KUMIAI_INVENTORY=str(KANAGAWA)))
    assert json.loads(result.stdout)["consortium"] == "lab"


def test_kanagawa_validates_with_14_towns() -> None:
    result = kumiai("--inventory", KANAGAWA, "town", "validate", "--json")
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data == {"ok": True, "consortium": "kanagawa", "towns": 14, "sites": ["primary-dc", "dr-dc"]}
    inv = load_inventory(KANAGAWA)
    assert all(with_check_digit(t.code[:5]) == t.code for t in inv.towns.values())
    assert inv.towns["kiyokawa"].code == "144029"


# --- town new


def test_new_writes_a_spec_that_validates_and_is_listed(inv: Path) -> None:
    args = ("town", "new", NEW_ID, "--name", NEW_NAME, "--code", NEW_CODE, "--population", "9200")
    state = clean_env(KUMIAI_STATE_DIR=str(inv.parent / "state"))  # its audit record stays out of the checkout
    result = kumiai("--inventory", inv, *args, env=state)
    assert result.code == 0, result.stderr
    written = inv / "towns" / f"{NEW_ID}.yaml"
    assert written.is_file()
    assert not list((inv / "towns").glob("*.tmp"))

    assert kumiai("--inventory", inv, "town", "validate").code == 0
    listed = json.loads(kumiai("--inventory", inv, "town", "list", "--json").stdout)
    row = next(t for t in listed["towns"] if t["id"] == NEW_ID)
    assert (row["name"], row["code"], row["population"], row["tier"]) == (NEW_NAME, NEW_CODE, 9200, "s")
    assert row["systems"] == 20
    assert row["segments"] == ["mynumber"]


def test_new_json_and_tier(inv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUMIAI_STATE_DIR", str(inv.parent / "state"))
    result = kumiai_in_process(
        "--inventory", inv, "town", "new", NEW_ID, "--name", NEW_NAME, "--code", NEW_CODE, "--tier", "m", "--json"
    )
    assert result.code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["town"]["tier"] == "m"
    assert data["written"].endswith(f"towns/{NEW_ID}.yaml")
    # Without --population the spec holds an estimate, marked as such.
    assert "estimate" in (inv / "towns" / f"{NEW_ID}.yaml").read_text(encoding="utf-8")


def test_new_refuses_to_overwrite(inv: Path) -> None:
    before = snapshot(inv)
    result = kumiai("--inventory", inv, "town", "new", "nakai", "--name", "中井町", "--code", "143618")
    assert result.code == 2
    assert "town 'nakai' exists already; kumiai never overwrites a spec" in result.stderr
    assert "Nothing was changed." in result.stderr
    assert snapshot(inv) == before


def test_new_refuses_when_a_yml_file_holds_the_id(inv: Path) -> None:
    (inv / "towns" / "nakai.yaml").rename(inv / "towns" / "nakai.yml")
    before = snapshot(inv)
    result = kumiai_in_process("--inventory", inv, "town", "new", "nakai", "--name", "中井町", "--code", "143618")
    assert result.code == 2
    assert "exists already" in result.stderr
    assert snapshot(inv) == before


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((NEW_ID, "--name", NEW_NAME, "--code", "143643"), "code: check digit of 143643 is wrong"),
        (
            (NEW_ID, "--name", NEW_NAME, "--code", "14364"),
            'code: must be 6 digits (5 digits and a check digit), got "14364"',
        ),
        (("Yamakita", "--name", NEW_NAME, "--code", NEW_CODE), "id: String should match pattern"),
        (("../escape", "--name", NEW_NAME, "--code", NEW_CODE), "id: String should match pattern"),
        ((NEW_ID, "--name", NEW_NAME, "--code", "143618"), "code: code 143618 is already used by town nakai"),
        ((NEW_ID, "--name", NEW_NAME, "--code", NEW_CODE, "--tier", "xl"), "tier: Input should be 's', 'm' or 'l'"),
        ((NEW_ID, "--name", NEW_NAME, "--code", NEW_CODE, "--population", "0"), "population: Input should be greater"),
        ((NEW_ID, "--name", "山北町\ntier: l", "--code", NEW_CODE), "name: must be one line of text"),
        ((NEW_ID, "--name", "", "--code", NEW_CODE), "name: String should have at least 1 character"),
    ],
    ids=[
        "check-digit",
        "short-code",
        "bad-id",
        "path-in-id",
        "duplicate-code",
        "tier-xl",
        "population-0",
        "newline",
        "empty-name",
    ],
)
def test_new_writes_nothing_when_invalid(inv: Path, args: tuple[str, ...], expected: str) -> None:
    before = snapshot(inv.parent)
    result = kumiai_in_process("--inventory", inv, "town", "new", *args)
    assert result.code == 2, result
    assert expected in result.stderr
    assert "Nothing was changed." in result.stderr
    assert snapshot(inv.parent) == before


def test_new_writes_nothing_when_invalid_through_the_console_script(inv: Path) -> None:
    before = snapshot(inv)
    result = kumiai("--inventory", inv, "town", "new", NEW_ID, "--name", NEW_NAME, "--code", "143643", "--json")
    assert result.code == 2
    assert result.stdout == ""
    assert f"towns/{NEW_ID}.yaml: code: check digit of 143643 is wrong: 14364 takes 2, i.e. 143642" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(inv) == before


def test_new_refuses_when_the_inventory_is_broken(inv: Path) -> None:
    (inv / "towns" / "nakai.yaml").write_text("id: nakai\n", encoding="utf-8")
    before = snapshot(inv)
    result = kumiai_in_process("--inventory", inv, "town", "new", NEW_ID, "--name", NEW_NAME, "--code", NEW_CODE)
    assert result.code == 2
    assert "nakai.yaml: code: required field is missing" in result.stderr
    assert snapshot(inv) == before


def test_new_population_must_be_a_number(inv: Path) -> None:
    before = snapshot(inv)
    result = kumiai(
        "--inventory", inv, "town", "new", NEW_ID, "--name", NEW_NAME, "--code", NEW_CODE, "--population", "many"
    )
    assert result.code == 2
    assert "--population" in result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(inv) == before
