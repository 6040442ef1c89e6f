"""Plans as signed artefacts: `kumiai plan --out`, `kumiai approve`, and every refusal of `kumiai apply`."""

from __future__ import annotations

import getpass
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cli_helpers import Result, clean_env, kumiai
from git_helpers import commit_all, edit, repo_with_inventory

from kumiai.audit.approval import NAMESPACE, approval_path, statement
from kumiai.planner import content_hash, plan_hash

AUTHOR = getpass.getuser()


def keypair(directory: Path, name: str) -> tuple[Path, str]:
    """A new ed25519 key: its private key file and the public key as consortium.yaml holds it."""
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(key)], check=True)
    kind, blob = key.with_suffix(".pub").read_text(encoding="utf-8").split()[:2]
    return key, f"{kind} {blob}"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    directory = tmp_path_factory.mktemp("keys")
    return {name: keypair(directory, name) for name in ("sato", "author", "stranger")}


def set_approvers(inv: Path, approvers: list[dict[str, str]]) -> None:
    """Replace consortium.yaml's approvers and commit."""
    path = inv / "consortium.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["approvers"] = approvers
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    commit_all(inv.parent, "approvers")


def make_repo(root: Path, keys: dict[str, tuple[Path, str]]) -> Path:
    inv = repo_with_inventory(root)
    set_approvers(
        inv,
        [
            {"name": "sato", "role": "監査", "ssh_key": keys["sato"][1]},
            {"name": AUTHOR, "role": "運用", "ssh_key": keys["author"][1]},
        ],
    )
    return inv


@pytest.fixture(scope="module")
def inv(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, tuple[Path, str]]) -> Path:
    return make_repo(tmp_path_factory.mktemp("repo"), keys)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    # No pulumi CLI on this PATH: apply must check everything and then say that no engine is available.
    return clean_env(KUMIAI_STATE_DIR=str(tmp_path_factory.mktemp("state")), PATH="/usr/bin:/bin")


def run(inv: Path, env: dict[str, str], *args: str | Path) -> Result:
    return kumiai("--inventory", inv, *args, env=env, cwd=inv.parent)


def make_plan(inv: Path, env: dict[str, str], out: Path, **extra: str) -> dict[str, Any]:
    r = run(inv, {**env, **extra}, "plan", "--no-validate", "--out", out, "--json")
    assert r.code == 0, r.stderr
    document: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    assert json.loads(r.stdout)["plan_hash"] == document["plan_hash"]
    return document


def write_signed(plan: Path, key: Path, plan_digest: str, break_glass: str | None = None) -> None:
    """An approval made by hand with ssh-keygen, as someone bypassing `kumiai approve` would."""
    signed = subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-n", NAMESPACE, "-f", str(key)],
        input=statement(plan_digest, break_glass),
        capture_output=True,
        check=True,
    )
    record = {"plan_hash": plan_digest, "break_glass": break_glass, "signature": signed.stdout.decode()}
    approval_path(plan).write_text(json.dumps(record), encoding="utf-8")


def audit(env: dict[str, str], operation: str) -> list[dict[str, Any]]:
    log = Path(env["KUMIAI_STATE_DIR"]) / "audit" / "audit.jsonl"
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in records if r.get("operation") == operation]


def refused(r: Result, *words: str) -> None:
    assert r.code == 2, (r.stdout, r.stderr)
    for word in words:
        assert word in r.stderr, r.stderr


def test_the_plan_file_says_where_it_came_from(inv: Path, env: dict[str, str], tmp_path: Path) -> None:
    document = make_plan(inv, env, tmp_path / "plan.json", KUMIAI_ACTOR="someone-else")
    assert (tmp_path / "plan.json").stat().st_mode & 0o777 == 0o600
    tree = subprocess.run(
        ["git", "rev-parse", "HEAD:inv"], cwd=inv.parent, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert document["inventory"] == {"path": "inv", "tree": tree, "dirty": False}
    assert (
        document["git_commit"]
        == subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=inv.parent, capture_output=True, text=True, check=True
        ).stdout.strip()
    )
    assert document["author"] == {"os_user": AUTHOR, "claimed_actor": "someone-else"}
    assert {"kumiai", "python", "pulumi", "pulumi_kubernetes", "render_code"} <= set(document["tools"])
    assert document["resources_hash"] == content_hash(document["resources"])
    assert document["plan_hash"] == plan_hash(document)
    assert {r["town"] for r in document["resources"]} == {"_platform", "kiyokawa", "manazuru", "nakai"}


def test_an_approved_current_plan_passes_every_check_and_then_needs_an_engine(
    inv: Path, env: dict[str, str], tmp_path: Path, keys: dict[str, tuple[Path, str]]
) -> None:
    plan = tmp_path / "plan.json"
    document = make_plan(inv, env, plan)
    approved = run(inv, env, "approve", plan, "--key", keys["sato"][0], "--json")
    assert approved.code == 0, approved.stderr
    assert json.loads(approved.stdout)["approver"] == "sato"
    applied = run(inv, env, "apply", plan)
    assert applied.code == 1, applied.stderr
    assert "approved by sato (監査), current" in applied.stdout
    assert "no engine available" in applied.stderr and "nothing was applied" in applied.stderr
    (record,) = [r for r in audit(env, "approve") if r["target"].get("plan_hash") == document["plan_hash"]][-1:]
    assert record["target"]["approver"] == "sato"


def test_apply_refuses_an_unsigned_plan(inv: Path, env: dict[str, str], tmp_path: Path) -> None:
    plan = tmp_path / "plan.json"
    make_plan(inv, env, plan)
    refused(run(inv, env, "apply", plan), "unsigned", "kumiai approve")


def test_apply_refuses_a_plan_signed_by_an_unknown_key(
    inv: Path, env: dict[str, str], tmp_path: Path, keys: dict[str, tuple[Path, str]]
) -> None:
    plan = tmp_path / "plan.json"
    document = make_plan(inv, env, plan)
    write_signed(plan, keys["stranger"][0], document["plan_hash"])
    refused(run(inv, env, "apply", plan), "not an approver's")
    # approve refuses the stranger's key before writing anything
    approval_path(plan).unlink()
    refused(run(inv, env, "approve", plan, "--key", keys["stranger"][0]), "not the key of any approver")
    assert not approval_path(plan).exists()


def test_apply_refuses_a_self_approved_plan(
    inv: Path, env: dict[str, str], tmp_path: Path, keys: dict[str, tuple[Path, str]]
) -> None:
    plan = tmp_path / "plan.json"
    document = make_plan(inv, env, plan)
    refused(run(inv, env, "approve", plan, "--key", keys["author"][0]), "may not approve it", "--break-glass")
    write_signed(plan, keys["author"][0], document["plan_hash"])  # made by hand, past `approve`
    refused(run(inv, env, "apply", plan), "self-approved", AUTHOR)


def test_a_claimed_actor_counts_as_the_author(
    inv: Path, env: dict[str, str], tmp_path: Path, keys: dict[str, tuple[Path, str]]
) -> None:
    plan = tmp_path / "plan.json"
    make_plan(inv, env, plan, KUMIAI_ACTOR="sato")
    refused(run(inv, env, "approve", plan, "--key", keys["sato"][0]), "sato wrote this plan")


def test_break_glass_is_allowed_signed_and_loud(
    inv: Path, env: dict[str, str], tmp_path: Path, keys: dict[str, tuple[Path, str]]
) -> None:
    plan = tmp_path / "plan.json"
    document = make_plan(inv, env, plan)
    no_reason = run(inv, env, "approve", plan, "--key", keys["author"][0], "--break-glass")
    refused(no_reason, "--reason")
    r = run(inv, env, "approve", plan, "--key", keys["author"][0], "--break-glass", "--reason", "site A lost")
    assert r.code == 0, r.stderr
    assert "BREAK-GLASS" in r.stderr and "site A lost" in r.stderr
    (record,) = [a for a in audit(env, "approve") if a["target"].get("plan_hash") == document["plan_hash"]][-1:]
    assert record["target"]["break_glass"] == "site A lost" and record["target"]["approver"] == AUTHOR
    applied = run(inv, env, "apply", plan)
    assert applied.code == 1 and "BREAK-GLASS" in applied.stderr and "no engine available" in applied.stderr
    # The reason is part of what was signed: editing it breaks the signature.
    sidecar = json.loads(approval_path(plan).read_text(encoding="utf-8"))
    approval_path(plan).write_text(json.dumps({**sidecar, "break_glass": "routine"}), encoding="utf-8")
    refused(run(inv, env, "apply", plan), "does not verify")


def test_apply_refuses_a_tampered_plan(
    inv: Path, env: dict[str, str], tmp_path: Path, keys: dict[str, tuple[Path, str]]
) -> None:
    plan = tmp_path / "plan.json"
    make_plan(inv, env, plan)
    assert run(inv, env, "approve", plan, "--key", keys["sato"][0]).code == 0
    original = plan.read_text(encoding="utf-8")
    # Any byte of the resources changed: their hash no longer matches.
    plan.write_text(original.replace('"pods": "20"', '"pods": "2000"', 1), encoding="utf-8")
    refused(run(inv, env, "apply", plan), "tampered", "resources_hash")
    # The author changed: the plan's hash no longer matches.
    document = json.loads(original)
    document["author"]["os_user"] = "sato"
    plan.write_text(json.dumps(document), encoding="utf-8")
    refused(run(inv, env, "apply", plan), "tampered", "plan_hash")
    # Changed with both hashes recomputed: the approval signed another plan.
    document["plan_hash"] = plan_hash(document)
    plan.write_text(json.dumps(document), encoding="utf-8")
    refused(run(inv, env, "apply", plan), "for another plan")


def test_apply_refuses_a_plan_that_differs_from_a_fresh_render(
    inv: Path, env: dict[str, str], tmp_path: Path, keys: dict[str, tuple[Path, str]]
) -> None:
    plan = tmp_path / "plan.json"
    document = make_plan(inv, env, plan)
    # A consistent, properly approved plan whose resources are not what this tree renders to (e.g. made by another
    # kumiai, or edited and re-hashed before approval).
    quota = next(r for r in document["resources"] if r["inputs"].get("kind") == "ResourceQuota")
    quota["inputs"]["spec"]["hard"]["pods"] = "2000"
    document["resources_hash"] = content_hash(document["resources"])
    document["plan_hash"] = plan_hash(document)
    plan.write_text(json.dumps(document), encoding="utf-8")
    assert run(inv, env, "approve", plan, "--key", keys["sato"][0]).code == 0
    # Every entry of the shared render cache poisoned to match: apply renders afresh, so it is not fooled.
    cache = Path(env["KUMIAI_STATE_DIR"]) / "cache" / "render"
    honest = {p: p.read_text(encoding="utf-8") for p in cache.glob("*/*.json") if quota in _with_pods(p, quota)}
    assert honest
    for entry in honest:
        entry.write_text(json.dumps(_with_pods(entry, quota)), encoding="utf-8")
    try:
        refused(run(inv, env, "apply", plan), "stale", "rendering the planned inventory now")
    finally:
        for entry, text in honest.items():
            entry.write_text(text, encoding="utf-8")


def _with_pods(entry: Path, quota: dict[str, Any]) -> list[dict[str, Any]]:
    """The cache entry's resources with the quota replaced by the edited one (same site, type and name)."""
    resources: list[dict[str, Any]] = json.loads(entry.read_text(encoding="utf-8"))
    same = ("site", "type", "name")
    return [quota if all(r[k] == quota[k] for k in same) else r for r in resources]


def test_apply_refuses_a_plan_after_the_inventory_moved_on(
    tmp_path: Path, keys: dict[str, tuple[Path, str]], env: dict[str, str]
) -> None:
    inv = make_repo(tmp_path / "repo", keys)
    plan = tmp_path / "plan.json"
    make_plan(inv, env, plan)
    assert run(inv, env, "approve", plan, "--key", keys["sato"][0]).code == 0
    edit(inv / "towns" / "nakai.yaml", "tier: s", "tier: m")
    commit_all(inv.parent, "nakai grows")
    refused(run(inv, env, "apply", plan), "stale", "changed since this plan")


def test_a_plan_of_uncommitted_changes_cannot_be_approved(
    tmp_path: Path, keys: dict[str, tuple[Path, str]], env: dict[str, str]
) -> None:
    inv = make_repo(tmp_path / "repo", keys)
    edit(inv / "towns" / "nakai.yaml", "tier: s", "tier: m")
    plan = tmp_path / "plan.json"
    r = run(inv, env, "plan", "--no-validate", "--out", plan)
    assert r.code == 0 and "uncommitted changes" in r.stderr
    assert json.loads(plan.read_text(encoding="utf-8"))["inventory"]["dirty"] is True
    refused(run(inv, env, "approve", plan, "--key", keys["sato"][0]), "uncommitted")
    refused(run(inv, env, "apply", plan), "uncommitted")


def test_no_approvers_and_not_a_plan_are_bad_input(tmp_path: Path, env: dict[str, str]) -> None:
    inv = repo_with_inventory(tmp_path / "repo")
    set_approvers(inv, [])
    plan = tmp_path / "plan.json"
    make_plan(inv, env, plan)
    key, _ = keypair(tmp_path, "k")
    refused(run(inv, env, "approve", plan, "--key", key), "approvers", "lists nobody")
    plan.write_text("{}", encoding="utf-8")
    refused(run(inv, env, "apply", plan), "not a kumiai plan")
    refused(run(inv, env, "apply", tmp_path / "missing.json"), "no such plan file")
