"""The OS user of a town: one per town, within Linux's 32 characters for every valid town id, never shared."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from kumiai.datalayer.topology import OS_NAME_MAX, os_user
from kumiai.models import TOWN_ID_PATTERN

# What useradd accepts (Debian's default NAME_REGEX, without the trailing '$' of machine accounts).
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]*$")
town_ids = st.from_regex(TOWN_ID_PATTERN, fullmatch=True)


def test_a_short_town_id_is_its_user_name_with_the_prefix() -> None:
    assert os_user("nakai") == "kumiai-nakai"
    assert os_user("a" * 25) == "kumiai-" + "a" * 25  # 32 characters: still fits


def test_a_long_town_id_keeps_its_start_and_a_hash_of_the_whole() -> None:
    long_id = "minamiashigara-kamiooi-" + "x" * 8  # 31 characters, the longest a town id can be
    assert re.fullmatch(TOWN_ID_PATTERN, long_id)
    name = os_user(long_id)
    assert len(name) == OS_NAME_MAX
    assert re.fullmatch(r"kumiai-minamiashigara-k_[0-9a-f]{8}", name)
    # Two ids that differ only after the kept part still get different users.
    assert os_user(long_id[:-1] + "y") != name


@given(town_ids)
def test_every_valid_town_id_gives_a_valid_user_name_of_at_most_32_characters(town_id: str) -> None:
    name = os_user(town_id)
    assert len(name) <= OS_NAME_MAX and USER_NAME.match(name), name
    assert os_user(town_id) == name  # the same on every host and every run


@given(town_ids, town_ids)
def test_two_town_ids_never_share_a_user(first: str, second: str) -> None:
    if first != second:
        assert os_user(first) != os_user(second)


def test_a_long_ids_name_never_equals_a_short_ids_name() -> None:
    # A 25-character id shaped like the long form: '_' never occurs in a town id, so the forms stay apart.
    lookalike = "minamiashigara-k-" + "0" * 8
    assert re.fullmatch(TOWN_ID_PATTERN, lookalike)
    assert os_user(lookalike) != os_user("minamiashigara-kamiooi-" + "x" * 8)
