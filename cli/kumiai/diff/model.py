"""What changes between two desired states, per town, site, resource and property. Pure: no files, no git.

A side is an inventory with the resources its stacks render to. Resources are matched by their Pulumi identity
(type and logical name), properties by path; lists of objects by the key Kubernetes identifies them by (a
container or port by name, a port by number and protocol, a limit by type), other lists as a whole. Values
equal on both sides are left out; secrets are compared and shown masked, as rendering hands them over.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kumiai.datalayer.hostvars import town_vars
from kumiai.inventory import Inventory
from kumiai.render import PLATFORM, SECRET
from kumiai_stacks import rules

Resource = Mapping[str, Any]

ADD, REMOVE, CHANGE, REPLACE = "add", "remove", "change", "replace"

# Keys that identify an item of a list of objects, tried in order; the first that every item has, uniquely on
# each side, is used.
LIST_IDENTITIES: tuple[tuple[str, ...], ...] = (("name",), ("port", "protocol"), ("port",), ("type",), ("key",))

# Properties Kubernetes does not change in place: a change deletes and recreates the object.
IMMUTABLE: dict[str | None, tuple[str, ...]] = {
    None: ("metadata.name", "metadata.namespace"),
    "RoleBinding": ("roleRef",),
    "ClusterRoleBinding": ("roleRef",),
    "Service": ("spec.clusterIP",),
}

_SECRET_KEY = re.compile(r"password|secret|cipher|passphrase|token|private", re.IGNORECASE)
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class Change:
    """One property: `old` or `new` is MISSING when the property is added or removed."""

    path: str
    old: Any
    new: Any

    @property
    def op(self) -> str:
        return ADD if self.old is MISSING else REMOVE if self.new is MISSING else CHANGE

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "op": self.op}
        if self.old is not MISSING:
            out["old"] = self.old
        if self.new is not MISSING:
            out["new"] = self.new
        return out


def _key(path: str, key: str) -> str:
    if not _PLAIN_KEY.match(key):
        return f'{path}["{key}"]'
    return f"{path}.{key}" if path else key


def _identity(old: Sequence[Any], new: Sequence[Any]) -> tuple[str, ...] | None:
    items = [*old, *new]
    if not items or not all(isinstance(i, Mapping) for i in items):
        return None
    for keys in LIST_IDENTITIES:
        if not all(all(k in i for k in keys) for i in items):
            continue
        if all(len({tuple(i[k] for k in keys) for i in side}) == len(side) for side in (old, new)):
            return keys
    return None


def diff_values(old: Any, new: Any, path: str = "") -> list[Change]:
    """Every property that differs, by nested path; an added or removed subtree is one change."""
    if old is MISSING or new is MISSING:
        return [] if old is new else [Change(path, old, new)]
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        changes: list[Change] = []
        for k in sorted(set(old) | set(new), key=str):
            changes += diff_values(old.get(k, MISSING), new.get(k, MISSING), _key(path, str(k)))
        return changes
    if isinstance(old, list) and isinstance(new, list) and old != new:
        keys = _identity(old, new)
        if keys is None:
            # Objects without an identity are matched by position only when none was added or removed.
            if len(old) == len(new) and all(isinstance(i, Mapping) for i in [*old, *new]):
                return [
                    c for n, (a, b) in enumerate(zip(old, new, strict=True)) for c in diff_values(a, b, f"{path}[{n}]")
                ]
            return [Change(path, old, new)]
        before = {tuple(i[k] for k in keys): i for i in old}
        after = {tuple(i[k] for k in keys): i for i in new}
        changes = []
        for ident in [*before, *(i for i in after if i not in before)]:
            label = "[" + ",".join(f"{k}={v}" for k, v in zip(keys, ident, strict=True)) + "]"
            changes += diff_values(before.get(ident, MISSING), after.get(ident, MISSING), f"{path}{label}")
        return changes
    return [] if old == new else [Change(path, old, new)]


@dataclass
class ResourceDiff:
    type: str
    name: str  # the Pulumi logical name
    kind: str
    object: str  # "namespace/name" of the Kubernetes object, or the logical name
    op: str
    changes: list[Change] = field(default_factory=list)
    replaced_by: list[str] = field(default_factory=list)  # immutable properties that changed

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "name": self.name,
            "kind": self.kind,
            "object": self.object,
            "op": self.op,
            "replace_because": self.replaced_by,
            "changes": [c.as_dict() for c in self.changes],
        }


def _describe(r: Resource) -> tuple[str, str]:
    inputs = r.get("inputs") or {}
    meta = inputs.get("metadata") or {}
    if "kind" not in inputs:
        return str(r["type"]).rsplit(":", 1)[-1], str(r["name"])
    ns = meta.get("namespace")
    return str(inputs["kind"]), f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def _replaced_by(kind: str, changes: Iterable[Change]) -> list[str]:
    fields = IMMUTABLE[None] + IMMUTABLE.get(kind, ())
    return sorted({c.path for c in changes for f in fields if c.path == f or c.path.startswith(f + ".")})


def diff_resources(old: Sequence[Resource], new: Sequence[Resource]) -> list[ResourceDiff]:
    """Resources added, removed, changed or replaced between two renders of one stack."""
    before = {(str(r["type"]), str(r["name"])): r for r in old}
    after = {(str(r["type"]), str(r["name"])): r for r in new}
    out: list[ResourceDiff] = []
    for ident in sorted(set(before) | set(after), key=lambda i: (i[1], i[0])):
        a, b = before.get(ident), after.get(ident)
        kind, obj = _describe(b if b is not None else a)  # type: ignore[arg-type]
        if a is None:
            out.append(ResourceDiff(ident[0], ident[1], kind, obj, ADD))
        elif b is None:
            out.append(ResourceDiff(ident[0], ident[1], kind, obj, REMOVE))
        else:
            changes = diff_values(a.get("inputs") or {}, b.get("inputs") or {})
            if changes:
                replaced = _replaced_by(kind, changes)
                out.append(
                    ResourceDiff(ident[0], ident[1], kind, obj, REPLACE if replaced else CHANGE, changes, replaced)
                )
    return out


@dataclass
class StackDiff:
    site: str
    town: str
    resources: list[ResourceDiff]
    violations_before: list[dict[str, str]]
    violations_after: list[dict[str, str]]
    present_before: bool
    present_after: bool

    def count(self, op: str) -> int:
        return sum(1 for r in self.resources if r.op == op)

    @property
    def changed(self) -> bool:
        return bool(self.resources) or self.violations_before != self.violations_after

    def as_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "town": self.town,
            "counts": {op: self.count(op) for op in (ADD, CHANGE, REPLACE, REMOVE)},
            "isolation": {"before": self.violations_before, "after": self.violations_after},
            "resources": [r.as_dict() for r in self.resources],
        }


@dataclass
class TownDiff:
    town: str
    name: str  # 団体名 (the newer one when it changed)
    status: str  # add | remove | change
    stacks: list[StackDiff]
    datalayer: list[Change]
    placement: tuple[str, str] | None  # (site before, site after) of the database, when it moved

    def as_dict(self) -> dict[str, Any]:
        return {
            "town": self.town,
            "name": self.name,
            "status": self.status,
            "placement": {"before": self.placement[0], "after": self.placement[1]} if self.placement else None,
            "datalayer": [c.as_dict() for c in self.datalayer],
            "stacks": [s.as_dict() for s in self.stacks],
        }


@dataclass
class Side:
    """One version of the desired state: a label for people (a git ref, "working tree"), the inventory, and the
    resources of each rendered stack by (site, town)."""

    label: str
    inventory: Inventory
    stacks: Mapping[tuple[str, str], Sequence[Resource]]


@dataclass
class InventoryDiff:
    base: str
    head: str
    consortium: str
    towns: list[TownDiff]
    platform: list[StackDiff]
    unchanged_towns: int

    @property
    def changed(self) -> bool:
        return bool(self.towns or self.platform)

    def stacks(self) -> list[StackDiff]:
        return [*self.platform, *(s for t in self.towns for s in t.stacks)]

    def count(self, op: str) -> int:
        return sum(s.count(op) for s in self.stacks())

    def as_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "head": self.head,
            "consortium": self.consortium,
            "changed": self.changed,
            "summary": {
                "towns_added": [t.town for t in self.towns if t.status == ADD],
                "towns_removed": [t.town for t in self.towns if t.status == REMOVE],
                "towns_changed": [t.town for t in self.towns if t.status == CHANGE],
                "towns_unchanged": self.unchanged_towns,
                "placement_moves": [
                    {"town": t.town, "before": t.placement[0], "after": t.placement[1]}
                    for t in self.towns
                    if t.placement
                ],
                "resources": {op: self.count(op) for op in (ADD, CHANGE, REPLACE, REMOVE)},
            },
            "platform": [s.as_dict() for s in self.platform],
            "towns": [t.as_dict() for t in self.towns],
        }


def mask_vars(values: Mapping[str, Any]) -> dict[str, Any]:
    """Host variables with anything secret-looking masked, at any depth."""

    def walk(key: str, v: Any) -> Any:
        if _SECRET_KEY.search(key):
            return SECRET
        if isinstance(v, Mapping):
            return {k: walk(str(k), x) for k, x in v.items()}
        if isinstance(v, list):
            return [walk(key, x) for x in v]
        return v

    return {k: walk(k, v) for k, v in values.items()}


def _stack(site: str, town: str, base: Side, head: Side) -> StackDiff:
    old, new = base.stacks.get((site, town)), head.stacks.get((site, town))
    return StackDiff(
        site,
        town,
        diff_resources(old or [], new or []),
        [v.as_dict() for v in rules.check(old or [])],
        [v.as_dict() for v in rules.check(new or [])],
        old is not None,
        new is not None,
    )


def compare(base: Side, head: Side) -> InventoryDiff:
    """The difference between two sides, towns in the order of the newer inventory, then removed ones."""
    sites = list(dict.fromkeys(site for side in (head, base) for site, _ in side.stacks))
    platform = [s for site in sites if (s := _stack(site, PLATFORM, base, head)).changed]
    town_ids = [*head.inventory.towns, *(t for t in base.inventory.towns if t not in head.inventory.towns)]
    rendered = {town for side in (base, head) for _, town in side.stacks}
    towns: list[TownDiff] = []
    unchanged = 0
    for town_id in town_ids:
        if town_id not in rendered:
            continue  # not selected (--town)
        old, new = base.inventory.towns.get(town_id), head.inventory.towns.get(town_id)
        stacks = [s for site in sites if (s := _stack(site, town_id, base, head)).changed]
        old_vars = mask_vars(town_vars(base.inventory, old)) if old else {}
        new_vars = mask_vars(town_vars(head.inventory, new)) if new else {}
        datalayer = diff_values(old_vars, new_vars)
        placement = None
        if old and new and old_vars["kumiai_primary_site"] != new_vars["kumiai_primary_site"]:
            placement = (old_vars["kumiai_primary_site"], new_vars["kumiai_primary_site"])
        status = ADD if old is None else REMOVE if new is None else CHANGE
        if status == CHANGE and not stacks and not datalayer:
            unchanged += 1
            continue
        name = (new or old).name  # type: ignore[union-attr]
        towns.append(TownDiff(town_id, name, status, stacks, datalayer, placement))
    return InventoryDiff(base.label, head.label, head.inventory.consortium.name, towns, platform, unchanged)
