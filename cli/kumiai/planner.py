"""`kumiai plan` without the engine: render every selected stack under mocks, check it, write it out.

A stack is one town at one site, or one site's platform. Stacks whose render key is in the cache are not
rendered again; the rest are rendered in batches (one program run per batch of one site), in worker processes
when there are enough of them to pay for starting the workers. Workers also check the rules and write the cache
and the manifests of what they rendered, so the parent handles summaries only. Only rendering is cached: the
isolation rules (and, when validating, the schema check) run on every stack every time, over what the cache holds.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kumiai import manifests
from kumiai.errors import InputError, KumiaiError, Problem
from kumiai.inventory import Inventory
from kumiai.render import PLATFORM, Job, stack_id
from kumiai.rendercache import RenderCache, stack_keys
from kumiai_stacks import rules
from kumiai_stacks.spec import platform_spec, tenant_spec

# Towns per program run. A run costs little to start, and the mocked runtime gets slower per resource as a run
# grows (measured: 1.9 ms per resource at 1-5 towns, 2.4 ms at 40), so runs stay small.
BATCH = 5
PLAN_FORMAT = "kumiai-plan/1"


@dataclass
class StackSummary:
    site: str
    town: str
    key: str
    counts: dict[str, int]
    namespaces: list[str]
    violations: list[dict[str, str]]
    schema: list[str] | None = None  # kubernetes-validate messages; None: not validated
    checkov: list[dict[str, str]] | None = None  # failed checkov checks; None: not checked
    rendered: bool = False

    def as_index(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "namespaces": self.namespaces,
            "violations": self.violations,
            "schema": self.schema,
            "checkov": self.checkov,
        }


@dataclass
class Plan:
    consortium: str
    towns: list[str]
    sites: list[str]
    stacks: list[StackSummary]
    cache: RenderCache
    violations: list[dict[str, str]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def rendered(self) -> int:
        return sum(1 for s in self.stacks if s.rendered)

    @property
    def resources(self) -> int:
        return sum(sum(s.counts.values()) for s in self.stacks)


def schema_check(resources: Sequence[dict[str, Any]]) -> list[str]:
    from kumiai.validate import schema_errors

    return schema_errors(manifests.manifest(r["inputs"]) for r in resources if "kind" in (r.get("inputs") or {}))


def summarize(site: str, town: str, key: str, resources: Sequence[dict[str, Any]]) -> StackSummary:
    counts = Counter(str(r["type"]).rsplit(":", 1)[-1] for r in resources)
    namespaces = sorted(
        str(r["inputs"]["metadata"]["name"]) for r in resources if (r.get("inputs") or {}).get("kind") == "Namespace"
    )
    return StackSummary(
        site=site,
        town=town,
        key=key,
        counts=dict(sorted(counts.items())),
        namespaces=namespaces,
        violations=[v.as_dict() for v in rules.check(resources)],
    )


def select_jobs(inv: Inventory, town_ids: Sequence[str], site_ids: Sequence[str]) -> list[Job]:
    """The stacks a plan covers; unknown --town or --site values are input errors naming the option."""
    known_sites = [s.id for s in inv.consortium.sites]
    problems = [
        Problem("--site", s, f"no site {s!r} in {inv.consortium.name}; sites are: {', '.join(known_sites)}")
        for s in site_ids
        if s not in known_sites
    ]
    problems += [
        Problem("--town", t, f"no town {t!r} in {inv.consortium.name}; known: {', '.join(inv.towns) or '(none)'}")
        for t in town_ids
        if t not in inv.towns
    ]
    if problems:
        raise InputError(problems)
    return jobs_for(inv, town_ids, site_ids)


def jobs_for(inv: Inventory, town_ids: Sequence[str], site_ids: Sequence[str]) -> list[Job]:
    """The stacks of the inventory's towns and sites among those named (all when none are)."""
    sites = [s for s in inv.consortium.sites if not site_ids or s.id in site_ids]
    towns = [t for t in inv.towns.values() if not town_ids or t.id in town_ids]
    jobs: list[Job] = []
    for site in sites:
        if not town_ids:  # a plan of selected towns leaves the platform out
            jobs.append(platform_spec(inv, site))
        jobs.extend(tenant_spec(inv, town, site) for town in towns)
    return jobs


def render_and_store(
    batch: list[tuple[Job, str]], cache_root: str, manifests_root: str | None, validate: bool
) -> list[StackSummary]:
    """Render one batch of one site, check it, cache it, write its manifests. Runs in a worker or in-process."""
    from kumiai.render import render_batch

    results = render_batch([job for job, _ in batch])
    cache = RenderCache(Path(cache_root))
    out: list[StackSummary] = []
    for job, key in batch:
        site, town = stack_id(job)
        resources = results[(site, town)]
        cache.write(key, resources)
        if manifests_root:
            manifests.write_stack(Path(manifests_root), site, town, key, resources)
        summary = summarize(site, town, key, resources)
        summary.rendered = True
        if validate:
            summary.schema = schema_check(resources)
        out.append(summary)
    return out


def _batches(todo: list[tuple[Job, str]], size: int) -> list[list[tuple[Job, str]]]:
    by_site: dict[str, list[tuple[Job, str]]] = {}
    for item in todo:
        by_site.setdefault(item[0].site.id, []).append(item)
    return [items[i : i + size] for items in by_site.values() for i in range(0, len(items), size)]


def _context() -> Any:
    # Forking is cheapest, and safe while this process has not started Pulumi's runtime (threads, event loop).
    method = "fork" if "pulumi" not in sys.modules else "spawn"
    return multiprocessing.get_context(method)


@dataclass
class Rendered:
    """Every selected stack in the render cache, with its summary (rules checked on what the cache holds now)."""

    cache: RenderCache
    summaries: dict[tuple[str, str], StackSummary]
    seconds: dict[str, float]

    def resources(self, site: str, town: str) -> list[dict[str, Any]]:
        return self.cache.read(self.summaries[(site, town)].key)

    def keys(self, jobs: Sequence[Job]) -> list[str]:
        return [self.summaries[stack_id(job)].key for job in jobs]


def _cached_summary(cache: RenderCache, site: str, town: str, key: str) -> StackSummary | None:
    """A stack's summary from what its cache entry holds, or None when there is no readable entry.

    The rules run on the cached resources every time: a cache entry is rebuildable data, never a verdict to trust.
    """
    try:
        resources = cache.read(key)
    except (OSError, ValueError):
        return None
    if not isinstance(resources, list) or not all(isinstance(r, dict) for r in resources):
        return None
    return summarize(site, town, key, resources)


def render_stacks(
    jobs: Sequence[Job],
    *,
    cache_dir: Path,
    manifests_dir: Path | None = None,
    workers: int | None = None,
    batch: int = BATCH,
    use_cache: bool = True,
    validate: bool = False,
) -> Rendered:
    """Render what the cache does not hold (in workers when that pays), and summarise every stack.

    The one render step of `plan`, `diff` and `apply`: whatever asks, a stack renders to the same resources."""
    t0 = time.perf_counter()
    cache = RenderCache(cache_dir)
    summaries: dict[tuple[str, str], StackSummary] = {}
    todo: list[tuple[Job, str]] = []
    for job, key in zip(jobs, stack_keys(list(jobs)), strict=True):
        site, town = stack_id(job)
        summary = _cached_summary(cache, site, town, key) if use_cache and cache.has(key) else None
        if summary is None:
            todo.append((job, key))
        else:
            summaries[(site, town)] = summary
    t1 = time.perf_counter()

    batches = _batches(todo, batch)
    workers = workers or os.cpu_count() or 1
    manifests_root = str(manifests_dir) if manifests_dir else None
    # Starting workers costs each of them a Pulumi import (about 0.6 s): only worth it for more than a few batches.
    if workers <= 1 or len(batches) <= 2 * workers:
        for b in batches:
            for s in render_and_store(b, str(cache_dir), manifests_root, validate):
                summaries[(s.site, s.town)] = s
    else:
        with ProcessPoolExecutor(max_workers=min(workers, len(batches)), mp_context=_context()) as pool:
            futures = [pool.submit(render_and_store, b, str(cache_dir), manifests_root, validate) for b in batches]
            for fut in futures:
                for s in fut.result():
                    summaries[(s.site, s.town)] = s
    t2 = time.perf_counter()
    return Rendered(cache, summaries, {"lookup": round(t1 - t0, 3), "render": round(t2 - t1, 3)})


def make_plan(
    inv: Inventory,
    jobs: Sequence[Job],
    *,
    cache_dir: Path,
    manifests_dir: Path | None,
    workers: int | None = None,
    batch: int = BATCH,
    use_cache: bool = True,
    validate: bool = True,
    prune: bool = False,
) -> Plan:
    t0 = time.perf_counter()
    rendered = render_stacks(
        jobs,
        cache_dir=cache_dir,
        manifests_dir=manifests_dir,
        workers=workers,
        batch=batch,
        use_cache=use_cache,
        validate=validate,
    )
    cache, summaries = rendered.cache, rendered.summaries
    # Only checkov's results are reused: it runs as a separate program over files and costs seconds.
    index = cache.read_index() if use_cache else {}
    for s in summaries.values():
        if not s.rendered:
            s.checkov = (index.get(s.key) or {}).get("checkov")
    t2 = time.perf_counter()

    if manifests_dir is not None:
        written = manifests.read_index(manifests_dir)
        for s in summaries.values():
            where = f"{s.site}/{s.town}"
            if not s.rendered and (
                written.get(where) != s.key or not manifests.stack_dir(manifests_dir, s.site, s.town).is_dir()
            ):
                manifests.write_stack(manifests_dir, s.site, s.town, s.key, cache.read(s.key))
            written[where] = s.key
        if prune:
            for site in {s.site for s in summaries.values()}:
                for gone in manifests.prune(
                    manifests_dir, site, {s.town for s in summaries.values() if s.site == site}
                ):
                    written.pop(f"{site}/{gone.name}", None)
        manifests.write_index(manifests_dir, written)
    t3 = time.perf_counter()
    if validate:
        for s in summaries.values():
            if s.schema is None:
                s.schema = schema_check(cache.read(s.key))
        unchecked = [s for s in summaries.values() if s.checkov is None]
        if manifests_dir is not None and unchecked:
            from kumiai.validate import run_checkov

            dirs = {manifests.stack_dir(manifests_dir, s.site, s.town).resolve(): s for s in unchecked}
            report = run_checkov(list(dirs))
            if not report["ran"]:
                raise KumiaiError(f"checkov did not run: {report.get('error', 'no output')}")
            for s in unchecked:
                s.checkov = []
            for failure in report["failed"]:
                owner = next((s for d, s in dirs.items() if Path(failure["file"]).resolve().is_relative_to(d)), None)
                if owner is not None:
                    owner.checkov.append(failure)  # type: ignore[union-attr]
    t4 = time.perf_counter()

    ordered = [summaries[stack_id(job)] for job in jobs]
    claims = [(s.site, s.town, ns) for s in ordered for ns in s.namespaces]
    cross = [v.as_dict() for v in rules.namespace_owners(claims)]
    violations = sorted(
        ({**v, "site": s.site} for s in ordered for v in s.violations),
        key=lambda v: (v["town"], v["site"], v["resource"]),
    ) + [{**v, "site": "*"} for v in cross]
    index.update({s.key: s.as_index() for s in ordered})
    cache.write_index(index)
    sites = list(dict.fromkeys(s.site for s in ordered))
    towns = list(dict.fromkeys(s.town for s in ordered if s.town != PLATFORM))
    return Plan(
        consortium=inv.consortium.name,
        towns=towns,
        sites=sites,
        stacks=ordered,
        cache=cache,
        violations=violations,
        seconds={
            **rendered.seconds,
            "manifests": round(t3 - t2, 3),
            "validation": round(t4 - t3, 3),
            "total": round(time.perf_counter() - t0, 3),
        },
    )


def canonical(value: Any) -> bytes:
    """The one JSON encoding hashed and signed: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def content_hash(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical(value)).hexdigest()


def resource_set(cache: RenderCache, keys: Iterable[str]) -> list[dict[str, Any]]:
    """Every resource of these stacks, in their order: what a plan file holds and its hash covers."""
    return [r for key in keys for r in cache.read(key)]


def plan_hash(document: dict[str, Any]) -> str:
    """The hash an approver signs: the whole plan file except this hash itself."""
    return content_hash({k: v for k, v in document.items() if k != "plan_hash"})


def plan_document(
    plan: Plan, resources: list[dict[str, Any]], validation: dict[str, Any] | None, provenance: dict[str, Any]
) -> dict[str, Any]:
    """The plan file: where it came from, what it checked, every resource (secrets masked) and their hash."""
    document = {
        "format": PLAN_FORMAT,
        **provenance,
        "consortium": plan.consortium,
        "towns": plan.towns,
        "sites": plan.sites,
        "policy": {"ok": not plan.violations, "violations": plan.violations},
        "validation": validation,
        "resources_hash": content_hash(resources),
        "resources": resources,
    }
    document["plan_hash"] = plan_hash(document)
    return document
