"""`backup verify`'s check of the S3 repos' buckets (a step of dr-runbooks/backup-verify.yaml): a bucket whose
versioning is off, whose object lock is missing, shorter than the town's `immutable_days` or GOVERNANCE where the
consortium asks COMPLIANCE makes its repo broken, however intact its backups are."""

from __future__ import annotations

from kumiai.datalayer.target import Target
from kumiai.datalayer.topology import Topology
from kumiai.dr.backup import run_towns, run_verdicts
from kumiai.dr.runbook import RunContext, action
from kumiai.objectstore.provision import bucket_spec
from kumiai.objectstore.s3 import client, weaker_than


@action("backup-check-locks")
def check_locks(ctx: RunContext) -> str:
    """Each S3 repo's bucket read with boto3 as its owner; posix repos have nothing to check."""
    target: Target = ctx.params["target"]
    topology: Topology = ctx.params["topology"]
    verdicts = run_verdicts(ctx)
    checked = weak = 0
    for town in run_towns(ctx):
        for repo in town.repos:
            store = topology.site(repo.site).object_store
            admin = target.object_store(repo.site)
            if store is None or admin is None:
                continue
            spec = bucket_spec(target, topology, town.id, repo.site)
            problems = weaker_than(client(store, admin.owner()), spec)
            verdicts[(town.id, repo.number)].broken += [f"bucket {spec.name}: {p}" for p in problems]
            checked += 1
            weak += bool(problems)
    return f"{checked} buckets checked, {weak} weaker than asked" if checked else "no S3 repos"
