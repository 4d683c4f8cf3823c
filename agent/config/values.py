"""Parsers for config values written as text: transfer rates ("2MB/s") and daily time windows ("09:00-17:00").

Pure functions, shared by the schema's checks and by the code that applies the values,
so a value the loader accepts is exactly a value the agent understands.
"""

from __future__ import annotations

import re
from datetime import time as clock

# B is bytes, b or bit is bits (as network rates are written); the prefix may be either case.
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)([iI]?)(B|b|bits?)?\s*(?:/\s*[sS]|ps)?\s*$")
_WINDOW = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_SCALE = {"": 0, "k": 1, "m": 2, "g": 3}


def parse_rate(text: str | int) -> int:
    """Bytes per second of ``"2MB/s"``, ``"500k"``, ``"1MiB/s"``, ``"8Mbit/s"``, ``"8Mbps"`` or a plain number of bytes/s.

    K/M/G are decimal (1000) as in network rates, Ki/Mi/Gi binary; ``b``/``bit`` (bits) divide by 8, ``B`` is bytes.
    Raises ValueError with a message fit for the user.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        value = float(text)
    else:
        m = _RATE.match(str(text))
        if not m:
            raise ValueError(
                f"{text!r} is not a rate; write e.g. '2MB/s', '500KB/s', '1MiB/s', '8Mbit/s' (B bytes, b bits) or bytes per second"
            )
        number, prefix, binary, unit = m.groups()
        base = 1024 if binary else 1000
        value = float(number) * base ** _SCALE[prefix.lower()]
        if unit and unit != "B":
            value /= 8
    if value < 1024:
        raise ValueError(f"{text!r} is below 1 KiB/s; that is too slow to move an image (null means no limit)")
    return int(value)


def parse_window(text: str) -> tuple[int, int]:
    """``"09:00-17:00"`` -> (start, end) in minutes after midnight; end < start wraps past midnight."""
    m = _WINDOW.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a time window; write 'HH:MM-HH:MM', e.g. '09:00-17:00' or '22:00-06:00'")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    for h, mi in ((h1, m1), (h2, m2)):
        if h > 24 or mi > 59 or (h == 24 and mi):
            raise ValueError(f"{text!r}: {h:02d}:{mi:02d} is not a time of day")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise ValueError(f"{text!r} is an empty window (start equals end)")
    return start, end


def in_window(window: tuple[int, int], at: clock) -> bool:
    start, end = window
    minute = at.hour * 60 + at.minute
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end  # wraps past midnight


def check_rate(v: str) -> str | None:
    try:
        parse_rate(v)
    except ValueError as exc:
        return str(exc)
    return None


def check_windows(v: list[str]) -> str | None:
    for i, item in enumerate(v):
        try:
            parse_window(item)
        except ValueError as exc:
            return f"[{i}] {exc}"
    return None
