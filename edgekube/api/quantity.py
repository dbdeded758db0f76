"""Resource quantities ("100m", "64Mi", "1.5", "2e3"), as upstream's resource.Quantity reads them.

Exact arithmetic with Decimal: the scheduler compares requests and the kubelet turns limits
into cgroup values, and neither may be off by a rounding error.
"""

from __future__ import annotations

import decimal
import re

_RE = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


class QuantityError(ValueError):
    pass


def parse(value: object) -> decimal.Decimal:
    """The quantity's value in base units (cores, bytes). Raises QuantityError."""
    if isinstance(value, bool):
        raise QuantityError("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    if isinstance(value, int):
        return decimal.Decimal(value)
    if isinstance(value, float):
        return decimal.Decimal(repr(value))
    if not isinstance(value, str):
        raise QuantityError("quantities must be strings or numbers")
    m = _RE.match(value.strip())
    if m is None:
        raise QuantityError("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")
    number = decimal.Decimal(m.group(1))
    suffix = m.group(2) or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    if suffix:
        return number.scaleb(int(suffix[1:]))
    return number


def milli(value: object) -> int:
    """The quantity in thousandths, rounded up (CPU millicores)."""
    return int((parse(value) * 1000).to_integral_value(rounding=decimal.ROUND_CEILING))


def whole(value: object) -> int:
    """The quantity in base units, rounded up (bytes)."""
    return int(parse(value).to_integral_value(rounding=decimal.ROUND_CEILING))
