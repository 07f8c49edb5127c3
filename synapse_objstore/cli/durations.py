"""Durations as s3_media_upload takes them: an integer and one of s, h, d, m (30 days), y (365 days)."""

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


def parse_duration(text: str) -> datetime.timedelta:
    """`'2m'` -> 60 days. ValueError with the accepted forms otherwise."""
    number, suffix = text[:-1], text[-1:]
    if suffix not in UNITS:
        raise ValueError(f"duration {text!r} must end in 's', 'h', 'd', 'm' or 'y'")
    try:
        count = int(number)
    except ValueError:
        raise ValueError(
            f"duration {text!r} must be an integer followed by a 's', 'h', 'd', 'm' or 'y' suffix"
        ) from None
    return count * UNITS[suffix]


def before_date(text: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """The moment `text` ago: media not accessed since then are offloaded."""
    return (now or datetime.datetime.now()) - parse_duration(text)


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A click parameter giving the cut-off datetime, like s3_media_upload's `parse_duration`."""

    name = "duration"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> datetime.datetime:
        if isinstance(value, datetime.datetime):
            return value
        try:
            return before_date(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)
