"""A percentage on the command line: a number from 0 to 100, never NaN."""

from __future__ import annotations

import math

import click


class Percentage(click.ParamType):  # type: ignore[type-arg]
    """click's FloatRange(0, 100) takes "nan", with which every comparison is false: a brake
    given NaN would never hold."""

    name = "percent"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if math.isnan(number) or not 0 <= number <= 100:
            self.fail(f"{value!r} is not a percentage from 0 to 100", param, ctx)
        return number
