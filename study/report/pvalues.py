"""How a p-value is written. A permutation test's p-value is never below its floor,
1 / (1 + permutations): a value at the floor says only that no permutation was as extreme as the
observed statistic, so it is written as a bound, ``p < 0.001 (2,000 permutations)``, not as the
floor's number (report.json keeps the number and the number of permutations beside it)."""
from __future__ import annotations

import math


def at_floor(est: dict) -> bool:
    """Whether an estimate's p-value is its permutation test's floor."""
    n = est.get("permutations")
    return bool(n) and est["p_value"] <= (1.0 + 1e-9) / (1.0 + n)


def bound(permutations: int) -> tuple[str, float]:
    """("<" or "≤", the smallest power of ten at or above the floor 1 / (1 + permutations))."""
    floor = 1.0 / (1.0 + permutations)
    power = 10.0 ** math.ceil(math.log10(floor) - 1e-12)
    return ("<" if floor < power * (1 - 1e-12) else "≤"), power


def _decimal(x: float) -> str:
    return f"{x:.{max(0, -math.floor(math.log10(x) + 1e-12))}f}"


def p_value(est: dict, digits: int = 4) -> str:
    """The p-value alone: ``0.0123`` or ``< 0.001`` (at the floor)."""
    if at_floor(est):
        sign, power = bound(est["permutations"])
        return f"{sign} {_decimal(power)}"
    return f"{est['p_value']:.{digits}f}"


def p_is(est: dict, digits: int = 4, sep: str = " = ") -> str:
    """``p = 0.0123``, or at the floor ``p < 0.001 (2,000 permutations)``."""
    if at_floor(est):
        return f"p {p_value(est)} ({est['permutations']:,} permutations)"
    return f"p{sep}{est['p_value']:.{digits}f}"
