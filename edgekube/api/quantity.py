"""Resource quantities ("100m", "64Mi", "1.5", "2e3"), as upstream's resource.Quantity reads them.

Exact arithmetic with Decimal: the scheduler compares requests and the kubelet turns limits
into cgroup values, and neither may be off by a rounding error.

`Quantity` is for code that adds quantities up and prints the result as the API server does
(ResourceQuota usage, LimitRange messages): it keeps the format its text was written in
(DecimalSI "500m", BinarySI "64Mi", DecimalExponent "1e3"), a sum takes the format of its first
non-zero term, and `str()` is upstream's canonical form ("1.5" prints "1500m", "1024Mi" "1Gi").
"""

from __future__ import annotations

import dataclasses
import decimal
import re

_RE = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_MAX_ADJUSTED = 60  # int64's largest in nano units is about 9.2e27
# Exact scaling, with exponents as wide as Decimal allows, and any overflow an exception.
_EXACT = decimal.Context(prec=decimal.MAX_PREC, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN,
                         traps=[decimal.InvalidOperation, decimal.Overflow])


class QuantityError(ValueError):
    pass


def parse(value: object) -> decimal.Decimal:
    """The quantity's value in base units (cores, bytes). Raises QuantityError."""
    out = _parse(value)
    if out and out.adjusted() > _MAX_ADJUSTED:
        # Upstream saturates such values at int64's largest; here every consumer would turn
        # them into ints of thousands of digits (`1e999999`), so they are refused.
        raise QuantityError(f"quantity is too large: at most 1e{_MAX_ADJUSTED} is accepted")
    return out


def _parse(value: object) -> decimal.Decimal:
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
        exponent = int(suffix[1:])
        if not -(2**31) <= exponent < 2**31:  # upstream reads the exponent as an int32
            raise QuantityError("unable to parse quantity's suffix")
        try:
            return number.scaleb(exponent, context=_EXACT)
        except ArithmeticError:  # past what Decimal can hold (1e999999999)
            raise QuantityError("unable to parse numeric part of quantity") from None
    return number


def milli(value: object) -> int:
    """The quantity in thousandths, rounded up (CPU millicores)."""
    return int((parse(value) * 1000).to_integral_value(rounding=decimal.ROUND_CEILING))


def whole(value: object) -> int:
    """The quantity in base units, rounded up (bytes)."""
    return int(parse(value).to_integral_value(rounding=decimal.ROUND_CEILING))


# --- quantities with a format, printed canonically ------------------------------------------

DECIMAL_SI = "DecimalSI"
BINARY_SI = "BinarySI"
DECIMAL_EXPONENT = "DecimalExponent"

# Wide enough that no sum of quantities upstream can hold is ever rounded.
_CTX = decimal.Context(prec=80)
_NANO = decimal.Decimal("1e-9")
_DECIMAL_SUFFIX = {-9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M", 9: "G", 12: "T", 15: "P", 18: "E"}
_BINARY_SUFFIX = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")


@dataclasses.dataclass(frozen=True)
class Quantity:
    value: decimal.Decimal
    format: str = DECIMAL_SI

    @classmethod
    def of(cls, text: object) -> Quantity:
        """Parse as upstream does: a non-zero value is rounded up (away from zero) to 1n, and a
        BinarySI value below 1 prints as DecimalSI. Raises QuantityError."""
        value = parse(text)
        fmt = DECIMAL_SI
        if isinstance(text, str):
            m = _RE.match(text.strip())
            suffix = (m.group(2) if m else None) or ""
            if suffix in _BINARY:
                fmt = BINARY_SI
            elif suffix[:1] in ("e", "E"):
                fmt = DECIMAL_EXPONENT
        if value:
            try:
                value = value.quantize(_NANO, rounding=decimal.ROUND_UP, context=_CTX)
            except decimal.InvalidOperation:
                pass  # more than 80 digits before the point: nothing there to round to 1n
        if fmt == BINARY_SI and 0 < abs(value) < 1:
            fmt = DECIMAL_SI
        return cls(value, fmt)

    def __add__(self, other: Quantity) -> Quantity:
        return Quantity(_CTX.add(self.value, other.value), other.format if not self.value else self.format)

    def __sub__(self, other: Quantity) -> Quantity:
        return Quantity(_CTX.subtract(self.value, other.value), other.format if not self.value else self.format)

    def __str__(self) -> str:
        return canonical(self.value, self.format)

    def milli(self) -> int:
        """Thousandths, rounded up (upstream's MilliValue)."""
        return int(_CTX.multiply(self.value, 1000).to_integral_value(rounding=decimal.ROUND_CEILING))

    def whole(self) -> int:
        """Base units, rounded up (upstream's Value)."""
        return int(self.value.to_integral_value(rounding=decimal.ROUND_CEILING))


def canonical(value: decimal.Decimal, fmt: str = DECIMAL_SI) -> str:
    """Upstream's canonical text of a quantity: DecimalSI and DecimalExponent use the largest
    exponent that is a multiple of 3 and keeps an integer mantissa ("1500m", "1k", "12e6"); BinarySI
    uses powers of 1024 when the value is a whole number of at least 1024 ("1536Mi"), DecimalSI
    otherwise."""
    if not value:
        return "0"
    sign = "-" if value < 0 else ""
    value = abs(value)
    if fmt == BINARY_SI:
        if value >= 1024 and value == value.to_integral_value():
            number, power = int(value), 0
            while number % 1024 == 0 and power < len(_BINARY_SUFFIX) - 1:
                number //= 1024
                power += 1
            return f"{sign}{number}{_BINARY_SUFFIX[power]}"
        fmt = DECIMAL_SI
    _, digits, exponent = value.normalize(_CTX).as_tuple()
    assert isinstance(exponent, int)
    mantissa = int("".join(map(str, digits)))
    shift = exponent % 3  # down to a multiple of 3: 10^-1 is 100 * 10^-3
    mantissa *= 10**shift
    exponent -= shift
    if fmt == DECIMAL_SI and exponent in _DECIMAL_SUFFIX:
        return f"{sign}{mantissa}{_DECIMAL_SUFFIX[exponent]}"
    return f"{sign}{mantissa}{f'e{exponent}' if exponent else ''}"
