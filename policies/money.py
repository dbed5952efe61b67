"""Money and prices as exact integers.

Theory of operation
-------------------
Money is an ``int`` count of minor units (0.01 CNY when the currency has two decimals) from
the wire to the journal and back; it is never a float. Decimal strings are parsed and printed
only here, at the edge of the domain.

Prices are per kWh on the wire and in config ("0.80"). Inside they are integer
*charge units* per Wh, where one minor unit is ``CHARGE_UNITS_PER_MINOR`` charge units. With
two currency decimals that makes a price exact to five decimal places of the currency per kWh
(``"0.56831"``); a price finer than that is refused rather than rounded.

Rounding rule (written down once, used everywhere): the cost of an energy delta is
``wh * price`` charge units, added to the meter's carried ``residue``; the whole minor units of
the sum are charged and the remainder (always ``0 <= residue < CHARGE_UNITS_PER_MINOR``) is
carried to the next interval. So charges are rounded down per interval but nothing is ever lost:
the sum of the charged minor units over any split of the consumption equals the floor of the
exact cost of the whole, and differs from it by less than one minor unit at any time.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

CHARGE_UNITS_PER_MINOR = 1_000_000
WH_PER_KWH = 1000

# A top-up or adjustment bigger than this is a typo, not a payment (10^12 minor units).
MAX_AMOUNT_MINOR = 10**12


class MoneyError(ValueError):
    """An amount or price that cannot be taken as written; the message says why."""


def _parse_decimal(text: object, what: str) -> Decimal:
    if not isinstance(text, str):
        raise MoneyError(f"{what} must be a decimal string like \"100.00\", got {text!r}")
    stripped = text.strip()
    if not stripped or stripped != text:
        raise MoneyError(f"{what} must be a decimal string like \"100.00\", got {text!r}")
    try:
        value = Decimal(stripped)
    except InvalidOperation:
        raise MoneyError(f"{what} is not a number: {text!r}") from None
    if not value.is_finite():
        raise MoneyError(f"{what} must be a finite number, got {text!r}")
    if "e" in stripped.lower():
        raise MoneyError(f"{what} must be written without an exponent, got {text!r}")
    return value


def parse_amount(text: object, decimals: int = 2, *, what: str = "amount") -> int:
    """Parse a decimal string into minor units, refusing anything that is not exact."""
    value = _parse_decimal(text, what)
    scaled = value.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise MoneyError(f"{what} has more than {decimals} decimal places: {text!r}")
    minor = int(scaled)
    if abs(minor) > MAX_AMOUNT_MINOR:
        raise MoneyError(f"{what} is out of range: {text!r}")
    return minor


def parse_positive_amount(text: object, decimals: int = 2, *, what: str = "amount") -> int:
    """Parse an amount that must be strictly positive (top-ups)."""
    minor = parse_amount(text, decimals, what=what)
    if minor <= 0:
        raise MoneyError(f"{what} must be > 0, got {text!r}")
    return minor


def format_amount(minor: int, decimals: int = 2) -> str:
    """Print minor units as a decimal string: 12345 -> "123.45", -5 -> "-0.05"."""
    sign = "-" if minor < 0 else ""
    digits = str(abs(minor)).rjust(decimals + 1, "0")
    if decimals == 0:
        return sign + digits
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


def amount_to_float(minor: int, decimals: int = 2) -> float:
    """For display-only channels that insist on a Double (OPC UA): never fed back into money."""
    return minor / int(10**decimals)  # int(): typeshed types int ** int as Any


def parse_price(text: object, decimals: int = 2, *, what: str = "price") -> int:
    """Parse a per-kWh price into charge units per Wh; refuse negatives and over-precision."""
    value = _parse_decimal(text, what)
    if value < 0:
        raise MoneyError(f"{what} must not be negative, got {text!r}")
    # currency/kWh -> minor/kWh (10^decimals) -> minor/Wh (/1000) -> charge units/Wh.
    scaled = value.scaleb(decimals) * CHARGE_UNITS_PER_MINOR / WH_PER_KWH
    if scaled != scaled.to_integral_value():
        places = decimals + 3
        raise MoneyError(f"{what} has more than {places} decimal places: {text!r}")
    return int(scaled)


def format_price(units_per_wh: int, decimals: int = 2) -> str:
    """Inverse of :func:`parse_price`, normalised ("0.80" -> "0.8")."""
    value = Decimal(units_per_wh) * WH_PER_KWH / CHARGE_UNITS_PER_MINOR
    text = format(value.scaleb(-decimals).normalize(), "f")
    return text


def charge(wh: int, price_units_per_wh: int, residue: int) -> tuple[int, int]:
    """Charge ``wh`` at a price, carrying ``residue``: returns (minor units, new residue)."""
    return divmod(wh * price_units_per_wh + residue, CHARGE_UNITS_PER_MINOR)
