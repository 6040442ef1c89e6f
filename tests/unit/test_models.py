"""The town and consortium models: the 団体コード check digit and the rules on each field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kumiai.catalogue import STANDARD_SYSTEMS, Segment, standard_catalogue
from kumiai.models import Consortium, Protection, System, Town, check_digit, with_check_digit

# The 14 members of 神奈川県町村情報システム共同事業組合 (docs: DOMAIN.md).
KANAGAWA_CODES = {
    "hayama": "143014",
    "samukawa": "143219",
    "oiso": "143413",
    "ninomiya": "143421",
    "nakai": "143618",
    "oi": "143626",
    "matsuda": "143634",
    "yamakita": "143642",
    "kaisei": "143669",
    "hakone": "143821",
    "manazuru": "143839",
    "yugawara": "143847",
    "aikawa": "144011",
    "kiyokawa": "144029",
}

PROTECTION = {
    "backup_schedule": "0 2 * * *",
    "retention_full": 7,
    "rpo_seconds": 300,
    "rto_seconds": 3600,
    "immutable_days": 30,
}


def town(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "kiyokawa",
        "name": "清川村",
        "code": "144029",
        "population": 2900,
        "systems": [{"name": "住民基本台帳", "segment": "mynumber"}, {"name": "財務会計", "segment": "lgwan"}],
        "tier": "s",
        "isolation": "namespace",
        "protection": dict(PROTECTION),
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not ...}


def site(site_id: str, role: str, **changes: Any) -> dict[str, Any]:
    return {
        "id": site_id,
        "role": role,
        "kube_context": f"ctx-{site_id}",
        "db_network": "10.0.0.0/16" if role == "primary" else "10.1.0.0/16",
        "object_storage": {"type": "posix", "path": f"{site_id}/backup"},
        **changes,
    }


def consortium(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "test",
        "sites": [site("a", "primary"), site("b", "dr")],
        "local_systems": [{"name": "財務会計", "segments": ["lgwan"]}],
    }
    data.update(changes)
    return data


CATALOGUE = Consortium.model_validate(consortium()).catalogue()


def errors(model: type[Town | Consortium | Protection], data: dict[str, Any]) -> dict[str, str]:
    """field path -> message, for each error."""
    with pytest.raises(ValidationError) as info:
        model.model_validate(data, context={"catalogue": CATALOGUE})
    return {".".join(map(str, e["loc"])): e["msg"] for e in info.value.errors()}


# --- the check digit


@pytest.mark.parametrize(("town_id", "code"), sorted(KANAGAWA_CODES.items()))
def test_every_kanagawa_code_verifies(town_id: str, code: str) -> None:
    assert check_digit(code[:5]) == int(code[5])
    assert with_check_digit(code[:5]) == code
    assert Town.model_validate(town(id=town_id, code=code)).code == code


def test_the_documented_example() -> None:
    assert check_digit("14402") == 9
    assert with_check_digit("14402") == "144029"


@pytest.mark.parametrize("code", sorted(KANAGAWA_CODES.values()))
def test_every_other_last_digit_fails(code: str) -> None:
    for wrong in set("0123456789") - {code[5]}:
        bad = code[:5] + wrong
        assert "code" in errors(Town, town(code=bad))


def test_check_digit_formula_including_remainders_0_and_1() -> None:
    """(11 - s % 11) % 10: remainder 0 gives 11 % 10 = 1, remainder 1 gives 10 % 10 = 0."""
    for first_five in ("00000", "00006", "10000", "14402", "99999", "54321"):
        total = sum(w * int(d) for w, d in zip((6, 5, 4, 3, 2), first_five, strict=True))
        assert check_digit(first_five) == (11 - total % 11) % 10
    assert check_digit("00000") == 1  # remainder 0
    assert check_digit("00006") == 0  # 2*6 = 12, remainder 1


# --- town fields


def test_a_valid_town() -> None:
    t = Town.model_validate(town(), context={"catalogue": CATALOGUE})
    assert t.segments == [Segment.mynumber, Segment.lgwan]
    assert t.placement is None


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"id": "a"}, "id", "pattern"),  # at least two characters
        ({"id": "9town"}, "id", "pattern"),
        ({"id": "town_1"}, "id", "pattern"),
        ({"id": "x" * 32}, "id", "pattern"),
        ({"id": "kiyokawa\n"}, "id", "pattern"),
        ({"name": ""}, "name", "at least 1 character"),
        ({"name": "   "}, "name", "must not be blank"),
        ({"name": "清川村\tx"}, "name", "control characters"),
        ({"name": "村" * 41}, "name", "at most 40 characters"),
        ({"code": 144029.0}, "code", "quoted string"),
        ({"code": True}, "code", "quoted string"),
        ({"code": 14402}, "code", "quoted string"),
        ({"code": "14402"}, "code", "6 digits"),
        ({"code": "１４４０２９"}, "code", "6 digits"),  # full-width digits
        ({"code": "144028"}, "code", "144029"),
        ({"population": 0}, "population", "greater than 0"),
        ({"population": -1}, "population", "greater than 0"),
        ({"population": "2900"}, "population", "integer"),
        ({"population": True}, "population", "integer"),
        ({"population": 2900.0}, "population", "integer"),
        ({"population": 50_000_001}, "population", "less than or equal"),
        ({"systems": []}, "systems", "at least 1 item"),
        ({"tier": "xl"}, "tier", "'s', 'm' or 'l'"),
        ({"tier": "S"}, "tier", "'s', 'm' or 'l'"),
        ({"isolation": "vm"}, "isolation", "'namespace', 'vcluster' or 'dedicated-nodes'"),
        ({"placement": {"primary": "a", "dr": "a"}}, "placement", "different sites"),
        ({"colour": "blue"}, "colour", "Extra inputs"),
        ({"id": ...}, "id", "required"),
        ({"protection": ...}, "protection", "required"),
    ],
)
def test_town_field_rules(changes: dict[str, Any], field: str, fragment: str) -> None:
    found = errors(Town, town(**changes))
    assert field in found, found
    assert fragment in found[field]


def test_unquoted_six_digit_code_is_accepted_as_no_digit_was_lost() -> None:
    assert Town.model_validate(town(code=144029)).code == "144029"


def test_japanese_names_are_allowed() -> None:
    assert Town.model_validate(town(name="湯河原町")).name == "湯河原町"


# --- systems and the catalogue


def test_the_catalogue_has_the_20_standardized_systems_in_mynumber_only() -> None:
    cat = standard_catalogue()
    assert len(cat) == len(STANDARD_SYSTEMS) == 20
    assert all(segments == {Segment.mynumber} for segments in cat.values())
    assert CATALOGUE["財務会計"] == {Segment.lgwan}


@pytest.mark.parametrize("system", STANDARD_SYSTEMS)
@pytest.mark.parametrize("segment", ["lgwan", "internet"])
def test_no_standardized_system_outside_mynumber(system: str, segment: str) -> None:
    with pytest.raises(ValidationError, match=f"{system} may only run in segment mynumber, not {segment}"):
        System.model_validate({"name": system, "segment": segment}, context={"catalogue": CATALOGUE})


def test_unknown_system_is_reported_at_its_name() -> None:
    found = errors(Town, town(systems=[{"name": "給食管理", "segment": "lgwan"}]))
    assert list(found) == ["systems.0.name"]
    assert "unknown system '給食管理'" in found["systems.0.name"]


def test_without_a_catalogue_system_names_are_not_checked() -> None:
    """The loader passes no catalogue when consortium.yaml is unreadable: only the types are checked then."""
    s = System.model_validate({"name": "給食管理", "segment": "internet"})
    assert s.segment is Segment.internet


def test_a_system_is_listed_once() -> None:
    twice = [{"name": "戸籍", "segment": "mynumber"}, {"name": "戸籍", "segment": "mynumber"}]
    assert "repeated: 戸籍" in errors(Town, town(systems=twice))["systems"]


# --- protection


@pytest.mark.parametrize(
    "schedule", ["0 2 * * *", "*/15 * * * *", "30 1,13 * * 1-5", "0 0 1 */3 *", "59 23 31 12 7", "0 0-6/2 * * 0"]
)
def test_valid_cron_schedules(schedule: str) -> None:
    assert Protection.model_validate({**PROTECTION, "backup_schedule": schedule}).backup_schedule == schedule


@pytest.mark.parametrize(
    "schedule",
    [
        "",
        "0 2 * *",
        "0 2 * * * *",
        "60 2 * * *",
        "0 24 * * *",
        "0 2 0 * *",
        "0 2 32 * *",
        "0 2 * 13 *",
        "0 2 * * 8",
        "0 5-2 * * *",
        "*/0 * * * *",
        "@daily",
        "0 2 * * MON",
        "0 2 * * ,",
        "- - - - -",
    ],
)
def test_invalid_cron_schedules(schedule: str) -> None:
    found = errors(Protection, {**PROTECTION, "backup_schedule": schedule})
    assert "cron expression of five fields" in found["backup_schedule"]


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("retention_full", 0, "greater than or equal to 1"),
        ("retention_full", "7", "integer"),
        ("rpo_seconds", -1, "greater than or equal to 0"),
        ("rpo_seconds", 7 * 86400 + 1, "less than or equal"),
        ("rto_seconds", 0, "greater than or equal to 1"),
        ("immutable_days", 1.5, "integer"),
        ("immutable_days", None, "integer"),
    ],
)
def test_protection_numbers(field: str, value: Any, fragment: str) -> None:
    assert fragment in errors(Protection, {**PROTECTION, field: value})[field]


# --- consortium


def test_a_valid_consortium() -> None:
    c = Consortium.model_validate(consortium())
    assert (c.primary_site.id, c.dr_site.id) == ("a", "b")


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"sites": [site("a", "primary")]}, "sites", "at least one site must have role 'dr'"),
        ({"sites": []}, "sites", "found 0 (none); at least one site must have role 'dr'"),
        ({"sites": [site("a", "primary"), site("b", "primary")]}, "sites", "found 2 (a, b)"),
        ({"sites": [site("a", "dr"), site("b", "dr")]}, "sites", "found 0"),
        ({"sites": [site("a", "primary"), site("a", "dr")]}, "sites", "repeated: a"),
        ({"sites": [site("a", "primary"), site("b", "backup")]}, "sites.1.role", "'primary' or 'dr'"),
        ({"sites": [site("a", "primary"), site("b", "dr", db_network="10.1.0.1/16")]}, "sites.1.db_network", ""),
        ({"sites": [site("a", "primary"), site("b", "dr", kube_context="")]}, "sites.1.kube_context", ""),
        (
            {"sites": [site("a", "primary"), site("b", "dr", object_storage={"type": "s3"})]},
            "sites.1.object_storage",
            "type s3 needs endpoint, region, bucket_prefix",
        ),
        (
            {"sites": [site("a", "primary"), site("b", "dr", object_storage={"type": "posix"})]},
            "sites.1.object_storage",
            "type posix needs 'path'",
        ),
        ({"local_systems": [{"name": "戸籍"}]}, "local_systems", "repeat standardized systems: 戸籍"),
        ({"local_systems": [{"name": "x"}, {"name": "x"}]}, "local_systems", "repeated: x"),
        ({"local_systems": [{"name": "x", "segments": []}]}, "local_systems.0.segments", "at least 1 item"),
        ({"defaults": {"tier": "xl"}}, "defaults.tier", "'s', 'm' or 'l'"),
        ({"name": ""}, "name", "at least 1 character"),
    ],
)
def test_consortium_rules(changes: dict[str, Any], field: str, fragment: str) -> None:
    found = errors(Consortium, consortium(**changes))
    assert field in found, found
    assert fragment in found[field]


def test_local_systems_default_to_lgwan() -> None:
    c = Consortium.model_validate(consortium(local_systems=[{"name": "人事給与"}]))
    assert c.catalogue()["人事給与"] == {Segment.lgwan}
