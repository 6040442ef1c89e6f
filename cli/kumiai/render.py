"""Run the tenant programs in-process under Pulumi's mocks and collect what they register.

Without the `pulumi` CLI there is no engine, but the programs are ordinary Python: under
`pulumi.runtime.set_mocks` every resource they declare reaches our Mocks object with its type, logical name
and inputs (for pulumi-kubernetes: the Kubernetes object itself). That is the desired state a plan shows.

Two ways to run, same programs:
- `render_straightforward`: one program run per stack (one town at one site, or one site's platform), as the
  engine would, nothing shared. The benchmark's baseline.
- `render_batch`: one program run for many stacks of one site, with the mocked runtime's avoidable per-resource
  costs removed (`fast_runtime`). What `kumiai plan` uses, in worker processes.

Pulumi is imported only here and only when something must be rendered, so a plan served from the cache
starts fast.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kumiai_stacks.spec import PlatformSpec, TenantSpec

Job = TenantSpec | PlatformSpec

PLATFORM = "_platform"  # the "town" of a site's platform resources; never a valid town id (no underscore)
SECRET = "[secret]"
TENANT_TYPE = "kumiai:tenant:Town"

Resource = dict[str, Any]


def stack_id(job: Job) -> tuple[str, str]:
    """(site, town) of a job; the platform of a site is (site, PLATFORM)."""
    town = getattr(job, "town", None)
    return job.site.id, town.id if town is not None else PLATFORM


def mask(value: Any) -> Any:
    """Inputs with every secret replaced by "[secret]", as plain Kubernetes data.

    The mock monitor hands inputs over through protobuf's Struct, where every number is a float: whole numbers
    become ints again, so a port is written as 5432, not 5432.0.
    """
    from pulumi.runtime import rpc

    def walk(v: Any) -> Any:
        if isinstance(v, dict):
            if v.get(rpc._special_sig_key) == rpc._special_secret_sig:
                return SECRET
            return {k: walk(v[k]) for k in sorted(v)}
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, float) and v.is_integer():
            return int(v)
        return v

    return walk(value)


def _town_of(typ: str, name: str, inputs: dict[str, Any]) -> str:
    if typ == TENANT_TYPE:
        return name
    labels = (inputs.get("metadata") or {}).get("labels") or {}
    return str(labels.get("kumiai.io/town") or PLATFORM)


def _recorder(site: str, out: list[Resource]) -> Any:
    from pulumi.runtime import MockCallArgs, MockResourceArgs, Mocks

    class Recorder(Mocks):
        """Records every registration; returns no state, as nothing in our programs reads a resource's outputs."""

        def new_resource(self, args: MockResourceArgs) -> tuple[str, dict[Any, Any]]:
            inputs = mask(args.inputs)
            out.append(
                {
                    "site": site,
                    "town": _town_of(args.typ, args.name, inputs),
                    "type": args.typ,
                    "name": args.name,
                    "inputs": inputs,
                }
            )
            return f"{args.name}-id", {}

        def call(self, args: MockCallArgs) -> tuple[dict[Any, Any], list[tuple[str, str]] | None]:
            raise RuntimeError(f"the tenant programs make no invokes, but one called {args.token}")

    return Recorder()


class _Outstanding:
    """The runtime's record of unresolved outputs (`SETTINGS.outputs`), with O(1) removal.

    Stock, it is a deque: every Output appends its future and removes it when it resolves, and `deque.remove`
    scans from the left, so a run's cost grows with the square of its outputs. The runtime uses append, popleft,
    remove, clear and len only; an insertion-ordered dict of future -> count gives them the same meaning (a future
    appended twice is removed twice) with removal in constant time. Measured on batches of 5 towns: 2.14 ->
    1.78 ms of CPU per resource (-17 %). One difference: a future appended twice is popped at its first place, where
    the deque would pop it at its later one too; the runtime's final loop pops every output and waits for all of them,
    so only the order of those waits can differ, not what is registered.
    """

    __slots__ = ("_count", "_items")

    def __init__(self) -> None:
        self._items: dict[Any, int] = {}
        self._count = 0

    def append(self, item: Any) -> None:
        self._items[item] = self._items.get(item, 0) + 1
        self._count += 1

    def remove(self, item: Any) -> None:
        count = self._items.get(item)
        if count is None:
            raise ValueError("not an outstanding output")
        if count == 1:
            del self._items[item]
        else:
            self._items[item] = count - 1
        self._count -= 1

    def popleft(self) -> Any:
        if not self._items:
            raise IndexError("no outstanding outputs")
        item = next(iter(self._items))
        self.remove(item)
        return item

    def clear(self) -> None:
        self._items.clear()
        self._count = 0

    def __len__(self) -> int:
        return self._count


def _run(program: Callable[[], object], site: str, project: str, stack: str, *, fast: bool = False) -> list[Resource]:
    import pulumi
    from pulumi.runtime.settings import SETTINGS

    recorded: list[Resource] = []
    pulumi.runtime.set_mocks(_recorder(site, recorded), project=project, stack=stack, preview=False)
    stock_outputs = SETTINGS.outputs
    if fast:
        SETTINGS.outputs = _Outstanding()
        # A run creates tens of thousands of futures and tasks; the cyclic collector, triggered by allocation
        # counts, walks all of them again and again (superlinear in the batch size). A run is short: collect after.
        gc.disable()
    try:
        # pulumi.runtime.test runs the function and waits for every outstanding registration.
        pulumi.runtime.test(program)()
    finally:
        if fast:
            SETTINGS.outputs = stock_outputs
            gc.enable()
    return recorded


def _group(resources: Iterable[Resource]) -> dict[tuple[str, str], list[Resource]]:
    grouped: dict[tuple[str, str], list[Resource]] = {}
    for r in resources:
        grouped.setdefault((r["site"], r["town"]), []).append(r)
    for rs in grouped.values():
        rs.sort(key=lambda r: (not r["type"].startswith("kumiai:"), r["name"], r["type"]))
    return grouped


def render_straightforward(jobs: Sequence[Job]) -> dict[tuple[str, str], list[Resource]]:
    """One program run per stack, in this process, with the stock mocked runtime."""
    from kumiai_stacks.programs import platform_program, tenant_program

    results: dict[tuple[str, str], list[Resource]] = {}
    for job in jobs:
        site, town = stack_id(job)
        program: Callable[[], object]
        if isinstance(job, TenantSpec):
            program, project = functools.partial(tenant_program, job), "kumiai-tenant"
        else:
            program, project = functools.partial(platform_program, job), "kumiai-platform"
        results.update(_group(_run(program, site, project, f"{town}.{site}")))
        results.setdefault((site, town), [])
    return results


@functools.cache
def fast_runtime() -> None:
    """Remove per-resource costs of the mocked runtime that do not change what is registered.

    Measured with cProfile on these programs: about a third of the time went into re-evaluating the type hints of
    the same input classes for every resource, and a few percent into capturing Python stack traces that only the
    engine uses for diagnostics. The first is memoised (a pure function of the class), the second skipped. (The
    third cost, the cyclic garbage collector, is paused per run in `_run`.)
    `tests/unit/test_render.py` checks that both runtimes register identical resources.
    """
    from pulumi import _types
    from pulumi.runtime import resource
    from pulumi.runtime.proto import source_pb2

    _types._types_from_py_properties = functools.cache(_types._types_from_py_properties)
    resource._get_stack_trace = source_pb2.StackTrace


def render_batch(jobs: Sequence[Job]) -> dict[tuple[str, str], list[Resource]]:
    """Many stacks of one site in one program run, with the fast runtime."""
    from kumiai_stacks.programs import site_program

    fast_runtime()
    sites = {j.site.id for j in jobs}
    if len(sites) != 1:
        raise ValueError(f"a batch holds one site, got {sorted(sites)}")
    (site,) = sites
    platform = next((j for j in jobs if isinstance(j, PlatformSpec)), None)
    tenants = [j for j in jobs if isinstance(j, TenantSpec)]
    results = _group(_run(lambda: site_program(platform, tenants), site, "kumiai-render", site, fast=True))
    for job in jobs:
        results.setdefault(stack_id(job), [])
    return results
