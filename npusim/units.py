"""Parsing of unit-bearing config values: sizes, bandwidths, frequencies.

Written here rather than taken from pint: the config needs exactly three dimensions, must refuse
anything ambiguous (a bare number for a bandwidth, "1.6 T", "1e9"), and pint's registry both accepts far
more than that and costs ~0.3 s of import on every CLI call.

Decimal prefixes (k, M, G, T) are powers of 1000; binary prefixes (Ki, Mi, Gi, Ti) powers of 1024.
"""

from __future__ import annotations

import re

_DEC = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_BIN = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_NUM = r"(?P<num>[0-9]+(?:\.[0-9]+)?)\s*"
_SIZE_RE = re.compile(_NUM + r"(?P<prefix>Ki|Mi|Gi|Ti|k|K|M|G|T)?B$")
_BW_RE = re.compile(_NUM + r"(?P<prefix>Ki|Mi|Gi|Ti|k|K|M|G|T)?B/s$")
_FREQ_RE = re.compile(_NUM + r"(?P<prefix>k|M|G)?Hz$")


class UnitError(ValueError):
    """A value that lacks its unit or does not parse."""


def _scale(prefix: str | None) -> int:
    prefix = prefix or ""
    return _BIN[prefix] if prefix in _BIN else _DEC[prefix]


def _match(pattern: re.Pattern[str], value: object, what: str, example: str) -> re.Match[str]:
    if isinstance(value, bool) or not isinstance(value, str):
        raise UnitError(f"needs a {what} with its unit as a string, e.g. \"{example}\" (got {value!r})")
    m = pattern.fullmatch(value.strip())
    if m is None:
        raise UnitError(f"not a {what}: {value!r} (expected e.g. \"{example}\")")
    return m


def parse_bytes(value: object) -> int:
    """'192 KiB' -> 196608. The result must be a whole number of bytes."""
    m = _match(_SIZE_RE, value, "size", "192 KiB")
    nbytes = float(m["num"]) * _scale(m["prefix"])
    if nbytes != int(nbytes):
        raise UnitError(f"size {value!r} is not a whole number of bytes")
    return int(nbytes)


def parse_bytes_per_s(value: object) -> float:
    """'1.6 TB/s' -> 1.6e12."""
    m = _match(_BW_RE, value, "bandwidth", "1.6 TB/s")
    return float(m["num"]) * _scale(m["prefix"])


def parse_hz(value: object) -> float:
    """'1.8 GHz' -> 1.8e9."""
    m = _match(_FREQ_RE, value, "frequency", "1.8 GHz")
    return float(m["num"]) * _scale(m["prefix"])


def format_bytes(nbytes: float) -> str:
    """Human-readable binary size for reports: 196608 -> '192.0 KiB'."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(nbytes) >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{nbytes:.0f} B"
