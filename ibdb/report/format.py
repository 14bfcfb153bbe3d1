"""How an estimate reads as text, the same in the CLI's tables and in report.md."""

from __future__ import annotations

import math


def format_bits(bits: float | None, lower: float | None, upper: float | None, bound: str,
                *, exponent_digits: int = 4) -> str:
    """One estimate as a table cell (the CLI's tables and report.md): '8.24 [7.14, 8.55]', '>=
    10.1' (a lower bound), '<= 2.3389e+10' (an upper bound, past 1e4 in exponent form with
    ``exponent_digits``); None or NaN: missing ('n/a', or no interval)."""
    def missing(value: float | None) -> bool:
        return value is None or math.isnan(value)

    if missing(bits):
        return "n/a"
    text = "inf" if math.isinf(bits) else f"{bits:.3g}" if bits < 1e4 \
        else f"{bits:.{exponent_digits}e}"
    if bound == "lower":
        return ">= " + text
    if bound == "upper":
        return "<= " + text
    if not (missing(lower) or missing(upper)):
        return f"{text} [{lower:.3g}, {upper:.3g}]"
    return text
