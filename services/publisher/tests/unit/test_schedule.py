"""Schedules resolve to one UTC instant; the DST rule is deliberate."""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime, timedelta, timezone

import pytest

from postd_common.errors import InvalidArgument
from postd_publisher.domain.model import ScheduleSpec
from postd_publisher.domain.schedule import bundled_zone, resolve, resolve_local


def test_absolute_times_keep_their_instant_in_utc() -> None:
    tokyo = datetime(2030, 1, 1, 9, 0, tzinfo=timezone(timedelta(hours=9)))
    assert resolve(ScheduleSpec(absolute=tokyo)) == datetime(2030, 1, 1, 0, 0, tzinfo=UTC)
    assert resolve(ScheduleSpec()) is None


def test_spring_forward_gap_is_refused_with_the_reason() -> None:
    with pytest.raises(InvalidArgument) as info:
        resolve_local("2026-03-29T02:30:00", "Europe/Berlin")
    assert "does not exist in Europe/Berlin" in info.value.message
    assert "UTC+01:00 to UTC+02:00" in info.value.message
    assert info.value.field == "schedule.local.local_time"
    # Either side of the gap is fine.
    assert resolve_local("2026-03-29T01:59:00", "Europe/Berlin") == datetime(
        2026, 3, 29, 0, 59, tzinfo=UTC
    )
    assert resolve_local("2026-03-29T03:00:00", "Europe/Berlin") == datetime(
        2026, 3, 29, 1, 0, tzinfo=UTC
    )


def test_fall_back_overlap_means_the_first_occurrence() -> None:
    # 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET): the first.
    assert resolve_local("2026-10-25T02:30:00", "Europe/Berlin") == datetime(
        2026, 10, 25, 0, 30, tzinfo=UTC
    )
    # In New York: 01:30 EDT (05:30 UTC) comes before 01:30 EST (06:30 UTC).
    assert resolve_local("2026-11-01T01:30:00", "America/New_York") == datetime(
        2026, 11, 1, 5, 30, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("local", "zone", "field"),
    [
        ("2026-07-01T09:00:00+02:00", "Europe/Berlin", "schedule.local.local_time"),
        ("tomorrow at nine", "Europe/Berlin", "schedule.local.local_time"),
        ("2026-07-01T09:00:00", "Europe/Atlantis", "schedule.local.time_zone"),
        ("2026-07-01T09:00:00", "../../etc/passwd", "schedule.local.time_zone"),
        ("2026-07-01T09:00:00", "", "schedule.local.time_zone"),
    ],
)
def test_malformed_local_schedules_say_which_field(local: str, zone: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        resolve(ScheduleSpec(local_time=local, time_zone=zone))
    assert info.value.field == field


def test_zones_come_from_the_bundled_tzdata_not_the_system(monkeypatch: pytest.MonkeyPatch) -> None:
    # A minimal image has no system tz database: the bundled one still answers.
    zoneinfo.reset_tzpath(to=[])
    try:
        bundled_zone.cache_clear()
        zone = bundled_zone("Australia/Lord_Howe")  # a 30-minute DST shift
        summer = datetime(2026, 1, 15, 12, 0, tzinfo=zone)
        winter = datetime(2026, 7, 15, 12, 0, tzinfo=zone)
        assert summer.utcoffset() == timedelta(hours=11)
        assert winter.utcoffset() == timedelta(hours=10, minutes=30)
    finally:
        zoneinfo.reset_tzpath()
        bundled_zone.cache_clear()
