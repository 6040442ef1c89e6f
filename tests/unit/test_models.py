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
        "0 2 * * *\n",
        "0\t2 * * *",
        "0 2 * * *\n[program:x]",
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
            "type posix needs path",
        ),
        ({"local_systems": [{"name": "戸籍"}]}, "local_systems", "repeat standardized systems: 戸籍"),
        ({"local_systems": [{"name": "x"}, {"name": "x"}]}, "local_systems", "repeated: x"),
        ({"local_systems": [{"name": "x", "segments": []}]}, "local_systems.0.segments", "at least 1 item"),
        ({"defaults": {"tier": "xl"}}, "defaults.tier", "'s', 'm' or 'l'"),
    ],
)
def test_consortium_rules(changes: dict[str, Any], field: str, fragment: str) -> None:
    found = errors(Consortium, consortium(**changes))
    assert field in found, found
    assert fragment in found[field]


def test_local_systems_default_to_lgwan() -> None:
    c = Consortium.model_validate(consortium(local_systems=[{"name": "人事給与"}]))
    assert c.catalogue()["人事給与"] == {Segment.lgwan}


# --- every consortium field by pattern or closed set: what reaches paths, tokens, templates and configs is data

# What an attacker put in the inventory of a demo lab: a Jinja lookup run by Ansible when it templated the value,
# a new line carrying a supervisord section, and paths leaving the lab directory or naming a system directory.
JINJA = "{{ lookup('pipe', 'id > /tmp/pwned') }}"
SECTION = "lab\n[program:x]\ncommand=/bin/sh -c id"


def with_site(**changes: Any) -> dict[str, Any]:
    """The consortium with its dr site changed."""
    return consortium(sites=[site("a", "primary"), site("b", "dr", **changes)])


def storage(**fields: Any) -> dict[str, Any]:
    return with_site(object_storage=fields)


S3 = {"type": "s3", "endpoint": "https://s3.example.jp", "region": "ap-northeast-1", "bucket_prefix": "kumiai-b"}


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        (consortium(name=""), "name", "lower-case letter"),
        (consortium(name="x"), "name", "pattern"),  # at least two characters
        (consortium(name="Lab"), "name", "pattern"),
        (consortium(name="lab one"), "name", "pattern"),
        (consortium(name="lab_1"), "name", "pattern"),
        (consortium(name="../lab"), "name", "pattern"),
        (consortium(name="lab\n"), "name", "pattern"),
        (consortium(name="a" * 42), "name", "pattern"),
        (consortium(name=JINJA), "name", "pattern"),
        (consortium(name=SECTION), "name", "pattern"),
        (with_site(name="主データセンター\n[program:x]"), "sites.1.name", "one line of text"),
        (with_site(name="遠隔地\u2028センター"), "sites.1.name", "U+2028"),  # a line separator
        (with_site(name="遠隔地\u202eセンター"), "sites.1.name", "U+202E"),  # right-to-left override
        (with_site(name="遠隔地 " + JINJA), "sites.1.name", "one line of text"),
        (with_site(name="a%(ENV_HOME)s"), "sites.1.name", "'%'"),  # supervisord's expansion
        (with_site(name="x" * 81), "sites.1.name", "at most 80"),
        (with_site(kube_context=""), "sites.1.kube_context", "kubeconfig context name"),
        (with_site(kube_context="ctx b"), "sites.1.kube_context", "pattern"),
        (with_site(kube_context="ctx\nb"), "sites.1.kube_context", "pattern"),
        (with_site(kube_context="-ctx"), "sites.1.kube_context", "pattern"),  # read as an option
        (with_site(kube_context=JINJA), "sites.1.kube_context", "pattern"),
        (with_site(kube_context="ctx;reboot"), "sites.1.kube_context", "pattern"),
        (with_site(id="b\n"), "sites.1.id", "pattern"),
        (with_site(db_network="10.1.0.0/16\n"), "sites.1.db_network", ""),
        (storage(type="posix", path="../../etc"), "sites.1.object_storage.path", "'..'"),
        (storage(type="posix", path="b/../../x"), "sites.1.object_storage.path", "'..'"),
        (storage(type="posix", path="b//backup"), "sites.1.object_storage.path", "empty components"),
        (storage(type="posix", path="."), "sites.1.object_storage.path", "'.'"),
        (storage(type="posix", path="b/backup\n"), "sites.1.object_storage.path", "directory path"),
        (storage(type="posix", path="b/back up"), "sites.1.object_storage.path", "directory path"),
        (storage(type="posix", path="~/backup"), "sites.1.object_storage.path", "directory path"),
        (storage(type="posix", path="/"), "sites.1.object_storage.path", "system directory (/)"),
        (storage(type="posix", path="/etc"), "sites.1.object_storage.path", "system directory (/etc)"),
        (storage(type="posix", path="/etc/kumiai"), "sites.1.object_storage.path", "system directory (/etc)"),
        (storage(type="posix", path="/usr/local/b"), "sites.1.object_storage.path", "system directory (/usr)"),
        (storage(type="posix", path="/var"), "sites.1.object_storage.path", "system directory (/var)"),
        (storage(type="posix", path="/var/log/b"), "sites.1.object_storage.path", "system directory (/var/log)"),
        (storage(type="posix", path="/home"), "sites.1.object_storage.path", "system directory (/home)"),
        (storage(type="posix", path="/home/ops"), "sites.1.object_storage.path", "system directory (/home)"),
        (storage(type="posix", path="/root"), "sites.1.object_storage.path", "system directory (/root)"),
        (storage(type="posix", path="/boot/b"), "sites.1.object_storage.path", "system directory (/boot)"),
        (storage(type="posix", path="/dev/shm"), "sites.1.object_storage.path", "system directory (/dev)"),
        (storage(type="posix", path="/proc/1"), "sites.1.object_storage.path", "system directory (/proc)"),
        (storage(type="posix", path="/sys/b"), "sites.1.object_storage.path", "system directory (/sys)"),
        (storage(type="posix", path="/bin"), "sites.1.object_storage.path", "system directory (/bin)"),
        (storage(type="posix", path="/tmp/b"), "sites.1.object_storage.path", "system directory (/tmp)"),
        (storage(type="posix", path="/srv"), "sites.1.object_storage.path", "system directory (/srv)"),
        (storage(type="posix", path="b", endpoint="https://s3.x"), "sites.1.object_storage", "remove endpoint"),
        (storage(**S3, path="b"), "sites.1.object_storage", "type s3 takes only endpoint, region, bucket_prefix"),
        (storage(**{**S3, "endpoint": "http://s3.example.jp"}), "sites.1.object_storage.endpoint", "https://"),
        (storage(**{**S3, "endpoint": "https://s3.example.jp\n"}), "sites.1.object_storage.endpoint", "pattern"),
        (storage(**{**S3, "endpoint": "https://u:p@s3.x"}), "sites.1.object_storage.endpoint", "pattern"),
        (storage(**{**S3, "endpoint": "https://s3.x/?a=b"}), "sites.1.object_storage.endpoint", "pattern"),
        (storage(**{**S3, "endpoint": "https://" + JINJA}), "sites.1.object_storage.endpoint", "pattern"),
        (storage(**{**S3, "region": "ap northeast"}), "sites.1.object_storage.region", "region name"),
        (storage(**{**S3, "region": "AP-1"}), "sites.1.object_storage.region", "pattern"),
        (storage(**{**S3, "bucket_prefix": "Kumiai"}), "sites.1.object_storage.bucket_prefix", "lower-case"),
        (storage(**{**S3, "bucket_prefix": "b/../x"}), "sites.1.object_storage.bucket_prefix", "pattern"),
        (consortium(local_systems=[{"name": "会計\n[program:x]"}]), "local_systems.0.name", "one line of text"),
        (consortium(local_systems=[{"name": JINJA}]), "local_systems.0.name", "'{'"),
        (consortium(local_systems=[{"name": "会計", "segments": ["dmz"]}]), "local_systems.0.segments.0", "'lgwan'"),
        (consortium(defaults={"isolation": "vm"}), "defaults.isolation", "'namespace'"),
    ],
)
def test_consortium_field_patterns(data: dict[str, Any], field: str, fragment: str) -> None:
    found = errors(Consortium, data)
    assert field in found, found
    assert fragment in found[field], found[field]


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "主データセンター (lab)"},
        {"name": "遠隔地バックアップセンター・第2"},
        {"kube_context": "arn:aws:eks:ap-northeast-1:123456789012:cluster/kumiai-dr"},
        {"kube_context": "gke_kumiai_asia-northeast1_dr"},
        {"kube_context": "ops@kumiai-dr"},
        {"object_storage": {"type": "posix", "path": "site-b/backup"}},
        {"object_storage": {"type": "posix", "path": "/srv/kumiai/backup"}},  # a real host's own directory
        {"object_storage": {"type": "posix", "path": "/var/lib/kumiai/backup"}},
        {"object_storage": S3},
        {"object_storage": {**S3, "endpoint": "https://rgw.site-b.example.jp:7480/"}},
    ],
)
def test_ordinary_site_values_are_accepted(changes: dict[str, Any]) -> None:
    Consortium.model_validate(with_site(**changes))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": "清川村\n[program:x]"}, "name"),
        ({"name": "清川村" + JINJA}, "name"),
        ({"name": "清川\x85村"}, "name"),  # NEL, a line break to YAML and to str.splitlines
        ({"name": "清川\u200b村"}, "name"),  # zero-width space: two names that look the same
        ({"systems": [{"name": "住民基本台帳\n", "segment": "mynumber"}]}, "systems.0.name"),
        ({"placement": {"primary": "a\n", "dr": "b"}}, "placement.primary"),
    ],
)
def test_town_text_is_one_line_of_visible_text(changes: dict[str, Any], field: str) -> None:
    assert field in errors(Town, town(**changes))


ED25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG5hbWUtb2YtYS10ZXN0LWtleS1ub3QtcmVhbC0wMDAw"


def approver(**changes: Any) -> dict[str, Any]:
    return consortium(approvers=[{"name": "sato", "role": "情報政策課長", "ssh_key": ED25519, **changes}])


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"name": "Sato"}, "approvers.0.name", "pattern"),
        ({"name": "sato\n"}, "approvers.0.name", "pattern"),
        ({"name": "sato; id"}, "approvers.0.name", "pattern"),
        ({"name": JINJA}, "approvers.0.name", "pattern"),
        ({"role": "課長\n[program:x]"}, "approvers.0.role", "one line of text"),
        ({"role": JINJA}, "approvers.0.role", "'{'"),
        ({"ssh_key": ED25519 + " sato@host"}, "approvers.0.ssh_key", "pattern"),  # a comment could carry anything
        ({"ssh_key": ED25519 + "\nssh-ed25519 AAAA"}, "approvers.0.ssh_key", "pattern"),
        ({"ssh_key": 'command="id" ' + ED25519}, "approvers.0.ssh_key", "pattern"),  # authorized_keys options
        ({"ssh_key": "ssh-dss AAAAB3NzaC1kc3M="}, "approvers.0.ssh_key", "pattern"),
        ({"ssh_key": "ssh-ed25519 " + "A" * 5000}, "approvers.0.ssh_key", "at most 4096"),
    ],
)
def test_approver_fields(changes: dict[str, Any], field: str, fragment: str) -> None:
    found = errors(Consortium, approver(**changes))
    assert field in found, found
    assert fragment in found[field], found[field]


def test_an_ordinary_approver_is_accepted() -> None:
    assert Consortium.model_validate(approver()).approvers[0].name == "sato"
