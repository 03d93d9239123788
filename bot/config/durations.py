"""Durations as the config and commands write them: `5s`, `15m`, `4h`, `1d` or a bare number of
seconds, and back."""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated

from pydantic import (
    BeforeValidator,
)

from bot.config.problems import shown

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_LONGEST = timedelta(days=36500)  # a century: anything longer is a typo, and timedelta overflows soon after


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """`5s`, `15m`, `4h`, `1d` or a bare number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{shown(value)} is not a duration: write 5s, 15m, 4h, 1d or a number of seconds")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds > 0:
        raise ValueError(f"{shown(value)} is not longer than zero: write 5s, 15m, 4h, 1d or a number of seconds")
    if not math.isfinite(seconds) or seconds > _LONGEST.total_seconds():
        raise ValueError(f"{shown(value)} is too long: write at most {format_duration(_LONGEST)}")
    return timedelta(seconds=seconds)


def format_duration(span: timedelta | float) -> str:
    """A duration the way the config writes it: `2h`, `15m`, `90s`, `1d` (the largest unit that
    divides it evenly, so the text reads back as the same duration)."""
    seconds = span.total_seconds() if isinstance(span, timedelta) else span
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
