"""Durations as s3_media_upload takes them: an integer and one of s, h, d, m (30 days), y (365 days).

Only positive ones: s3_media_upload took `-5y` for a cutoff five years ahead, which offloads
media just uploaded and, kept as update-db's cutoff, hid every media from the runs after it.
(reconcile's grace period may be zero: no grace.)
"""

from __future__ import annotations

import datetime

import click

UNITS = {
    "s": datetime.timedelta(seconds=1),
    "h": datetime.timedelta(hours=1),
    "d": datetime.timedelta(days=1),
    # 'm' is a month, as in s3_media_upload: minutes are written in seconds
    "m": datetime.timedelta(days=30),
    "y": datetime.timedelta(days=365),
}


def parse_duration(text: str, allow_zero: bool = False) -> datetime.timedelta:
    """`'2m'` -> 60 days. ValueError with the accepted forms otherwise."""
    number, suffix = text[:-1], text[-1:]
    if suffix not in UNITS:
        raise ValueError(f"duration {text!r} must end in 's', 'h', 'd', 'm' or 'y'")
    digits = number.removeprefix("-")
    if not (digits.isascii() and digits.isdigit()):  # no '+', spaces, '_' or other scripts' digits
        raise ValueError(f"duration {text!r} must be an integer followed by a 's', 'h', 'd', 'm' or 'y' suffix")
    count = int(number)
    if count < 0 or (count == 0 and not allow_zero):
        raise ValueError(f"duration {text!r} must be {'zero or more' if allow_zero else 'more than zero'}")
    try:
        return count * UNITS[suffix]
    except OverflowError:
        raise ValueError(f"duration {text!r} is too long") from None


def before_date(text: str, now: datetime.datetime | None = None, allow_zero: bool = False) -> datetime.datetime:
    """The moment `text` ago: media not accessed since then are offloaded."""
    try:
        return (now or datetime.datetime.now()) - parse_duration(text, allow_zero)
    except OverflowError:
        raise ValueError(f"duration {text!r} is too long") from None


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A click parameter giving the cut-off datetime, like s3_media_upload's `parse_duration`."""

    name = "duration"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> datetime.datetime:
        if isinstance(value, datetime.datetime):
            return value
        try:
            return before_date(str(value), allow_zero=self.allow_zero)
        except ValueError as error:
            self.fail(str(error), param, ctx)
