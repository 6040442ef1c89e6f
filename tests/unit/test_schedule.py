"""Cron schedules: next and previous firings written out as literal times (JST), and the systemd timer form."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from kumiai.dr.schedule import ZONE, next_fire, parse, previous_fire, systemd_calendar


def jst(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=ZONE)


# Friday 27 November 2026, 23:44:30 in Japan.
FRIDAY_NIGHT = datetime(2026, 11, 27, 14, 44, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 2 * * *", FRIDAY_NIGHT, jst(2026, 11, 28, 2, 0)),
        ("*/15 * * * *", jst(2026, 11, 27, 10, 7), jst(2026, 11, 27, 10, 15)),
        # strictly after: a firing exactly at `after` is not the next one
        ("*/15 * * * *", jst(2026, 11, 27, 10, 15), jst(2026, 11, 27, 10, 30)),
        ("5/20 * * * *", jst(2026, 11, 27, 10, 26), jst(2026, 11, 27, 10, 45)),
        ("* * * * *", jst(2026, 11, 27, 10, 7, 59), jst(2026, 11, 27, 10, 8)),
        ("0 0 1 1 *", FRIDAY_NIGHT, jst(2027, 1, 1)),
        ("0 0 29 2 *", FRIDAY_NIGHT, jst(2028, 2, 29)),
        # day of month and weekday both given: either fires (the 1st of December comes before the next Friday)
        ("30 4 1,15 * 5", jst(2026, 11, 27, 4, 30), jst(2026, 12, 1, 4, 30)),
        ("30 4 1,15 * 5", jst(2026, 11, 27, 4, 29), jst(2026, 11, 27, 4, 30)),
        # 0 and 7 are both Sunday
        ("0 0 * * 7", FRIDAY_NIGHT, jst(2026, 11, 29)),
        ("0 0 * * 0", FRIDAY_NIGHT, jst(2026, 11, 29)),
        # a weekday step is not a restriction of its own: Sunday, Tuesday, Thursday, Saturday
        ("0 0 * * */2", FRIDAY_NIGHT, jst(2026, 11, 28)),
        ("0 9-17/4 * 1-6 1-5", FRIDAY_NIGHT, jst(2027, 1, 1, 9)),
    ],
)
def test_next_fire(expression: str, after: datetime, expected: datetime) -> None:
    assert next_fire(expression, after) == expected


@pytest.mark.parametrize(
    ("expression", "at", "expected"),
    [
        ("0 2 * * *", FRIDAY_NIGHT, jst(2026, 11, 27, 2, 0)),
        # at or before: a firing exactly at `at` counts
        ("*/15 * * * *", jst(2026, 11, 27, 10, 15), jst(2026, 11, 27, 10, 15)),
        ("*/15 * * * *", jst(2026, 11, 27, 10, 14, 59), jst(2026, 11, 27, 10, 0)),
        ("0 0 1 1 *", FRIDAY_NIGHT, jst(2026, 1, 1)),
        ("0 0 29 2 *", FRIDAY_NIGHT, jst(2024, 2, 29)),
        ("30 4 1,15 * 5", jst(2026, 11, 26), jst(2026, 11, 20, 4, 30)),
        ("0 22 * * 1-5", jst(2026, 11, 30, 8), jst(2026, 11, 27, 22, 0)),
        ("0 0 * 2 *", FRIDAY_NIGHT, jst(2026, 2, 28)),
    ],
)
def test_previous_fire(expression: str, at: datetime, expected: datetime) -> None:
    assert previous_fire(expression, at) == expected


def test_a_schedule_that_never_fires_has_no_firing() -> None:
    assert next_fire("0 0 30 2 *", FRIDAY_NIGHT) is None
    assert previous_fire("0 0 31 4 *", FRIDAY_NIGHT) is None


def test_times_are_compared_as_instants_whatever_the_zone() -> None:
    # 17:00 UTC is 02:00 the next day in Japan
    assert previous_fire("0 2 * * *", datetime(2026, 11, 27, 17, 0, tzinfo=UTC)) == jst(2026, 11, 28, 2)
    assert previous_fire("0 2 * * *", datetime(2026, 11, 27, 16, 59, tzinfo=UTC)) == jst(2026, 11, 27, 2)


@pytest.mark.parametrize("expression", ["60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "* * * * 8", "* * *"])
def test_bad_expressions_are_refused(expression: str) -> None:
    with pytest.raises(ValueError, match=r"five fields|outside"):
        parse(expression)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        next_fire("* * * * *", datetime(2026, 11, 27, 10, 0))


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 2 * * *", ["*-*-* 02:00:00 Asia/Tokyo"]),
        ("*/15 * * * *", ["*-*-* *:00,15,30,45:00 Asia/Tokyo"]),
        ("* * * * *", ["*-*-* *:*:00 Asia/Tokyo"]),
        ("30 4 1,15 * 5", ["*-*-01,15 04:30:00 Asia/Tokyo", "Fri *-*-* 04:30:00 Asia/Tokyo"]),
        ("0 0 * * */2", ["Sun,Tue,Thu,Sat *-*-* 00:00:00 Asia/Tokyo"]),
        ("0 0 29 2 *", ["*-02-29 00:00:00 Asia/Tokyo"]),
        ("0 9-11 * 1-3 7", ["Sun *-01,02,03-* 09,10,11:00:00 Asia/Tokyo"]),
    ],
)
def test_systemd_calendar(expression: str, expected: list[str]) -> None:
    assert systemd_calendar(expression) == expected
