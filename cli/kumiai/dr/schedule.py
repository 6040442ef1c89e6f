"""Cron schedules of the town spec (`protection.backup_schedule`): when they fire. Pure.

Five fields (minute, hour, day of month, month, day of week 0-7 with 0 and 7 Sunday) made of numbers, `*`,
ranges `a-b`, lists `a,b` and steps `/n`, as the town model validates them. As in cron, when both the day of month
and the day of week are restricted a day matching either one fires.

Schedules are read in the consortium's time zone, Japan Standard Time, wherever they run: the lab's scheduler,
a host's systemd timer (whose OnCalendar names the zone) and `backup verify` all agree on "02:00" whatever the
machine's own zone is. JST has no daylight saving time, so every local minute exists exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

SCHEDULE_ZONE = "Asia/Tokyo"
ZONE = ZoneInfo(SCHEDULE_ZONE)
RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
# The rarest schedule that ever fires (29 February on a given weekday) repeats within 28 years.
SEARCH_DAYS = 366 * 28
WEEKDAYS = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")


def _field(text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        body, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"step must be at least 1 in {item!r}")
        if body == "*":
            first, last = low, high
        else:
            first_text, _, last_text = body.partition("-")
            first = int(first_text)
            # "5/15" means 5, 20, 35, 50: a start with a step runs to the end of the range.
            last = int(last_text) if last_text else (high if step_text else first)
        if not low <= first <= last <= high:
            raise ValueError(f"{item!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday ... 6 = Saturday
    day_restricted: bool
    weekday_restricted: bool

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def times(self) -> list[tuple[int, int]]:
        """(hour, minute) of every firing in a matching day, in order."""
        return [(h, m) for h in sorted(self.hours) for m in sorted(self.minutes)]


def parse(expression: str) -> Cron:
    """A five-field cron expression; ValueError says what is wrong."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"a cron expression has five fields, {expression!r} has {len(fields)}")
    try:
        minutes, hours, days, months, weekdays = (
            _field(text, low, high) for text, (low, high) in zip(fields, RANGES, strict=True)
        )
    except ValueError as exc:
        raise ValueError(f"{expression!r}: {exc}") from None
    return Cron(
        minutes=minutes,
        hours=hours,
        days=days,
        months=months,
        weekdays=frozenset(d % 7 for d in weekdays),
        day_restricted=not fields[2].startswith("*"),
        weekday_restricted=not fields[4].startswith("*"),
    )


def _local(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("give an aware datetime (with a time zone)")
    return moment.astimezone(ZONE).replace(second=0, microsecond=0)


def next_fire(expression: str, after: datetime) -> datetime | None:
    """The first firing strictly after `after` (in the schedule's zone); None when the schedule never fires."""
    cron = parse(expression)
    start = _local(after)
    times = cron.times()
    for offset in range(SEARCH_DAYS):
        day = start.date() + timedelta(days=offset)
        if not cron.day_matches(day):
            continue
        for hour, minute in times:
            candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZONE)
            if candidate > after:
                return candidate
    return None


def previous_fire(expression: str, at: datetime) -> datetime | None:
    """The last firing at or before `at` (in the schedule's zone); None when the schedule never fires."""
    cron = parse(expression)
    start = _local(at)
    times = cron.times()[::-1]
    for offset in range(SEARCH_DAYS):
        day = start.date() - timedelta(days=offset)
        if not cron.day_matches(day):
            continue
        for hour, minute in times:
            candidate = datetime(day.year, day.month, day.day, hour, minute, tzinfo=ZONE)
            if candidate <= at:
                return candidate
    return None


def _values(values: frozenset[int], low: int, high: int) -> str:
    return "*" if values == frozenset(range(low, high + 1)) else ",".join(f"{v:02d}" for v in sorted(values))


def systemd_calendar(expression: str) -> list[str]:
    """systemd OnCalendar= values firing exactly when the cron expression does (several lines are ORed).

    systemd ANDs a weekday with a day of month where cron ORs them, so such a schedule becomes two values."""
    cron = parse(expression)
    clock = f"{_values(cron.hours, 0, 23)}:{_values(cron.minutes, 0, 59)}:00"
    months = _values(cron.months, 1, 12)
    weekdays = ",".join(WEEKDAYS[d] for d in sorted(cron.weekdays))

    def spec(days: str, on_weekdays: str | None) -> str:
        prefix = f"{on_weekdays} " if on_weekdays else ""
        return f"{prefix}*-{months}-{days} {clock} {SCHEDULE_ZONE}"

    days = _values(cron.days, 1, 31)
    if cron.day_restricted and cron.weekday_restricted:
        return [spec(days, None), spec("*", weekdays)]
    return [spec(days, None if len(cron.weekdays) == len(WEEKDAYS) else weekdays)]
