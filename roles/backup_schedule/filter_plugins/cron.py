"""Jinja filter `cron_to_oncalendar`: a town's cron schedule as systemd OnCalendar= values.

The conversion is kumiai's own (kumiai.dr.schedule), so the timers fire exactly when `kumiai backup verify`
expects a backup; Ansible runs from kumiai's environment, where it is importable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kumiai.dr.schedule import systemd_calendar


class FilterModule:
    def filters(self) -> dict[str, Callable[..., Any]]:
        return {"cron_to_oncalendar": systemd_calendar}
