"""Timestamps in S3 replies, parsed without dateutil where the form is the usual one.

botocore parses every timestamp it meets (each GET's and HEAD's Last-Modified header, each
listed object's LastModified) with dateutil's general parser: about 55 us each here, 8% of the
Python CPU a restore spends per small file. S3 sends two forms, an HTTP date in headers and
ISO 8601 in XML bodies; each has a parser in the standard library that takes 0.1-3 us. Any
other form goes to botocore's own parser, so what botocore accepts is still accepted.
"""

from __future__ import annotations

from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from botocore.utils import parse_timestamp as botocore_parse_timestamp


def parse_timestamp(value: str | float) -> datetime:
    """`value` as a timezone-aware datetime, as botocore's `parse_timestamp` gives it. A form
    without a zone is taken as UTC (S3's dates are in UTC)."""
    if isinstance(value, str):
        moment = _iso_8601(value) if value[:1].isdigit() else _http_date(value)
        if moment is not None:
            return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)
    return botocore_parse_timestamp(value)  # type: ignore[no-any-return]


def _iso_8601(value: str) -> datetime | None:
    try:  # Python 3.10's fromisoformat does not take the "Z"
        return datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return None


def _http_date(value: str) -> datetime | None:
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
