"""Human-readable numbers for report tables: KiB/MiB/GiB, ms, k tok/s, 2.1e-3.

Every formatter takes a raw value in SI units (bytes, seconds, tokens per second)
and returns a short string. A missing value (None or NaN) becomes an em dash, never
"nan". ``format_stat`` writes "mean ± spread" (the report passes the half-width of the 95%
t-interval) with both numbers in the unit chosen for the mean, so a reader compares like
with like.
"""
from __future__ import annotations

import math
from typing import Callable

EM_DASH = "\u2014"

KINDS = ("bytes", "seconds", "rate", "count", "plain", "sci", "acc", "pct", "factor")


def is_missing(value: object) -> bool:
    """True for None, NaN, infinities and anything that is not a number."""
    if value is None:
        return True
    try:
        return not math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return True


def _digits(value: float) -> str:
    """Three significant digits without scientific notation (value already scaled)."""
    mag = abs(value)
    if value.is_integer() or mag >= 100:
        return f"{value:.0f}"
    if mag >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _spread(value: float) -> str:
    """A standard deviation (already scaled): two significant digits, never rounded to zero."""
    mag = abs(value)
    if mag == 0 or mag >= 10:
        return _digits(value)
    if mag < 1e-3:
        return _sci(value)
    return f"{value:.2g}" if mag < 1 else f"{value:.1f}"


def _bytes_unit(value: float) -> tuple[float, str]:
    for power, suffix in ((4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if abs(value) >= 1024 ** power * 0.9995:
            return 1024.0 ** power, suffix
    return 1.0, "B"


def _seconds_unit(value: float) -> tuple[float, str]:
    mag = abs(value)
    if mag >= 7200:
        return 3600.0, "h"
    if mag >= 120:
        return 60.0, "min"
    if mag >= 1:
        return 1.0, "s"
    if mag >= 1e-3 or mag == 0:
        return 1e-3, "ms"
    return 1e-6, "\u00b5s"


def _si_unit(value: float) -> tuple[float, str]:
    mag = abs(value)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if mag >= div * 0.9995:
            return div, suffix
    return 1.0, ""


def _sci(value: float) -> str:
    """Compact scientific notation: 0.00213 -> '2.1e-3'; zero -> '0'."""
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.1e}".split("e")
    exp = int(exponent)
    if -2 <= exp <= 2:
        return _digits(value)
    return f"{mantissa}e{exp}"


def _plain(value: float) -> str:
    if value.is_integer() and abs(value) < 1e5:
        return str(int(value))
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-2):
        return _sci(value)
    return _digits(value)


def _scaled(unit: Callable[[float], tuple[float, str]], sep: str, tail: str = "") -> Callable:
    def pair(mean: float, std: float | None) -> tuple[str, str | None]:
        div, suffix = unit(mean)
        text = f"{_digits(mean / div)}{sep}{suffix}{tail}".rstrip()
        spread = None if std is None else f"{_spread(std / div)}{sep}{suffix}{tail}".rstrip()
        return text, spread
    return pair


def _simple(fmt: Callable[[float], str], spread: Callable[[float], str] | None = None) -> Callable:
    def pair(mean: float, std: float | None) -> tuple[str, str | None]:
        return fmt(mean), None if std is None else (spread or fmt)(std)
    return pair


def unit_for(value: float, kind: str) -> tuple[float, str]:
    """(divisor, suffix) used to show ``value``: e.g. (1048576, "MiB") for 3e6 bytes."""
    pickers = {"bytes": _bytes_unit, "seconds": _seconds_unit, "rate": _si_unit, "count": _si_unit}
    if kind not in pickers:
        raise ValueError(f"unit kind {kind!r} has no scaled unit; use one of {', '.join(pickers)}")
    return pickers[kind](value)


def _pair_formatter(kind: str) -> Callable[[float, float | None], tuple[str, str | None]]:
    if kind == "bytes":
        return _scaled(_bytes_unit, " ")
    if kind == "seconds":
        return _scaled(_seconds_unit, " ")
    if kind == "rate":
        return _scaled(_si_unit, "", " tok/s")
    if kind == "count":
        return _scaled(_si_unit, "")
    if kind == "plain":
        return _simple(_plain, lambda v: _spread(v) if abs(v) < 1e5 else _sci(v))
    if kind == "sci":
        return _simple(_sci)
    if kind == "acc":
        return _simple(lambda v: f"{100 * v:.1f}%")
    if kind == "pct":
        return _simple(lambda v: f"{v:+.1f}%" if v != 0 else "0.0%")
    if kind == "factor":
        return _simple(lambda v: f"{v:.2f}\u00d7")
    raise ValueError(f"unit kind {kind!r} is not one of {', '.join(KINDS)}")


def format_value(value: object, kind: str) -> str:
    """One value in human units; missing -> em dash."""
    if is_missing(value):
        _pair_formatter(kind)  # still reject an unknown kind
        return EM_DASH
    text, _ = _pair_formatter(kind)(float(value), None)  # type: ignore[arg-type]
    return text


def format_stat(mean: object, std: object, kind: str, n: int = 1) -> str:
    """'mean ± spread' (spread shown only with n > 1 and a finite, non-zero value); missing -> em dash."""
    if is_missing(mean):
        _pair_formatter(kind)
        return EM_DASH
    with_std = n > 1 and not is_missing(std) and float(std) != 0.0  # type: ignore[arg-type]
    text, spread = _pair_formatter(kind)(float(mean), float(std) if with_std else None)  # type: ignore[arg-type]
    if spread is None:
        return text
    if kind in ("bytes", "seconds", "rate"):  # "12.3 ± 0.40 MiB": unit once, at the end
        number, _, unit = text.partition(" ")
        spread_number = spread.partition(" ")[0]
        return f"{number} \u00b1 {spread_number} {unit}".rstrip()
    return f"{text} \u00b1 {spread}"
