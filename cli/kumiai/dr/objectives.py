"""A town's protection targets against what is measured: cross-site lag against its RPO, its newest backup
against its backup schedule, a healthy leader. Pure: `kumiai status` and `kumiai backup verify` both ask here.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from kumiai.datalayer.status import TownStatus
from kumiai.dr.schedule import previous_fire
from kumiai.models import Protection

# Time a scheduled backup may take before its absence counts: a full backup of a large town runs a while.
DEFAULT_GRACE_S = 1800


def due_since(schedule: str, now: datetime, grace_s: float) -> datetime | None:
    """The scheduled time that the newest backup must not be older than, at `now`.

    The last firing at least `grace_s` ago: a backup fired more recently may still be running, so the one
    before it is what must be there. None when the schedule never fires."""
    return previous_fire(schedule, now - timedelta(seconds=grace_s))


def stale_reason(schedule: str, newest: datetime | None, now: datetime, grace_s: float) -> str | None:
    """Why the newest backup (its stop time; None: there is none) misses the schedule, or None when it does not."""
    due = due_since(schedule, now, grace_s)
    if newest is None:
        return "no backup at all"
    if due is None or newest >= due:
        return None
    age = int((now - newest).total_seconds())
    return (
        f"newest backup finished {newest.isoformat(timespec='seconds')} ({age} s ago), before the backup due at "
        f"{due.isoformat(timespec='minutes')} by the schedule {schedule!r} (grace {grace_s:.0f} s)"
    )


def status_alerts(status: TownStatus, protection: Protection, now: datetime, grace_s: float) -> list[str]:
    """What misses the town's targets right now, one line each; empty when every target is met."""
    alerts = []
    for cluster in (status.primary, status.dr):
        if cluster.leader is None or not cluster.healthy:
            state = "unreachable" if not cluster.reachable else f"leader {cluster.leader or 'none'}, not healthy"
            alerts.append(f"no healthy leader at {cluster.site} ({cluster.kind} cluster: {state})")
    if status.dr_reclone:
        alerts.append(
            f"the DR standby at {status.dr.site} needs a re-clone: {status.dr_reclone}; "
            f"run kumiai onboard {status.town}"
        )
    if status.dr_lag is None:
        alerts.append(f"cross-site lag to {status.dr.site} unknown: the DR standby is not streaming from the primary")
    elif status.dr_lag.seconds > protection.rpo_seconds:
        alerts.append(
            f"cross-site lag {status.dr_lag.seconds:.1f} s ({status.dr_lag.bytes} B) exceeds the RPO of "
            f"{protection.rpo_seconds} s"
        )
    for repo, backup in status.backups.items():
        reason = stale_reason(protection.backup_schedule, backup.stopped_at if backup else None, now, grace_s)
        if reason:
            alerts.append(f"repo{repo}: {reason}")
    return alerts
