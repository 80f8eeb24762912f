"""Resolving a schedule to one UTC instant.

The rule for local times (what people mean by "9:00 in Berlin"):

* A local time is a wall-clock reading without an offset, read in an IANA zone from
  the ``tzdata`` package that ships with the code, so a minimal image without a
  system tz database resolves the same instant as a full one (never an hour off).
* A time that exists once maps to that instant.
* A time in the hour repeated when clocks go back (fall-back overlap, e.g.
  02:30 on 2026-10-25 in Europe/Berlin) means its FIRST occurrence — the earlier
  instant, still on summer time (00:30 UTC in that example). Posting "at 02:30" then
  happens at the first 02:30 people see, and never twice.
* A time skipped when clocks go forward (spring-forward gap, e.g. 02:30 on
  2026-03-29 in Europe/Berlin) does not exist: it is refused with a message naming
  the gap, rather than silently moved an hour, so nobody's post is an hour off.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from importlib import resources
from zoneinfo import ZoneInfo

from postd_common.errors import InvalidArgument
from postd_publisher.domain.model import ScheduleSpec

_ZONE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+)*$")


@lru_cache(maxsize=512)
def bundled_zone(name: str) -> ZoneInfo:
    """The zone ``name`` from the ``tzdata`` package; raises ``InvalidArgument``."""
    if not _ZONE_NAME.match(name) or len(name) > 64:
        raise InvalidArgument(
            f"time zone {name!r} is not an IANA time zone name such as 'Europe/Berlin'",
            field="schedule.local.time_zone",
        )
    parts = name.split("/")
    node = resources.files("tzdata.zoneinfo")
    for part in parts:
        node = node.joinpath(part)
    try:
        with node.open("rb") as raw:
            return ZoneInfo.from_file(raw, key=name)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, ValueError) as exc:
        raise InvalidArgument(
            f"unknown time zone {name!r}; use an IANA name such as 'America/New_York'",
            field="schedule.local.time_zone",
        ) from exc


def parse_local_time(text: str) -> datetime:
    """A naive wall-clock time from ISO 8601 without offset."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InvalidArgument(
            f"local time {text!r} is not an ISO 8601 date and time such as '2026-03-29T09:00:00'",
            field="schedule.local.local_time",
        ) from exc
    if parsed.tzinfo is not None:
        raise InvalidArgument(
            f"local time {text!r} carries an offset; give the wall-clock time alone with "
            "time_zone, or use publish_at for an absolute time",
            field="schedule.local.local_time",
        )
    return parsed


def resolve_local(local_time: str, time_zone: str) -> datetime:
    """The UTC instant of ``local_time`` in ``time_zone`` (rule in the module doc)."""
    if not local_time:
        raise InvalidArgument("schedule.local needs local_time", field="schedule.local.local_time")
    if not time_zone:
        raise InvalidArgument("schedule.local needs time_zone", field="schedule.local.time_zone")
    zone = bundled_zone(time_zone)
    wall = parse_local_time(local_time)
    first = wall.replace(tzinfo=zone, fold=0)
    instant = first.astimezone(UTC)
    # A wall time in a gap does not survive the round trip back to local time.
    if instant.astimezone(zone).replace(tzinfo=None) != wall:
        before = wall.replace(tzinfo=zone, fold=0)
        after = wall.replace(tzinfo=zone, fold=1)
        raise InvalidArgument(
            f"{local_time} does not exist in {time_zone}: clocks go forward that night "
            f"(from UTC{_offset(before)} to UTC{_offset(after)}) and skip it. "
            "Pick a time outside the skipped hour.",
            field="schedule.local.local_time",
        )
    return instant


def _offset(moment: datetime) -> str:
    delta = moment.utcoffset() or timedelta(0)
    minutes = int(delta.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def resolve(spec: ScheduleSpec) -> datetime | None:
    """The UTC publish time of a schedule; ``None`` means as soon as possible."""
    if spec.absolute is not None:
        if spec.absolute.tzinfo is None:
            raise InvalidArgument("publish_at must carry an offset", field="schedule.publish_at")
        return spec.absolute.astimezone(UTC)
    if spec.kind == "local":
        return resolve_local(spec.local_time, spec.time_zone)
    return None
