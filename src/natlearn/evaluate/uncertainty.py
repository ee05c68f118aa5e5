"""How sure a top-1 is: its binomial standard error over the test images, and when a difference
between two top-1s is too small to tell from the luck of the test sample.

A top-1 ``p`` measured on ``n`` test images has standard error ``sqrt(p (1 - p) / n)``: 0.9 on
1,400 images is 0.9 +- 0.008. Two top-1s measured on test samples of their own differ by noise alone
with a standard error of ``sqrt(se_a^2 + se_b^2)``; natlearn calls a difference inside two of those
"within noise" (about the 95% level) and reports no gain, gap fraction or ranking for it. On one
shared test split this is conservative: paired predictions would vary less.
"""

from __future__ import annotations

import math

__all__ = ["standard_error", "with_error", "difference_error", "within_noise", "gap_note"]

NOISE_ERRORS = 2.0
"""A difference inside this many standard errors of the difference is called within noise."""


def standard_error(top1: float, n: int) -> float:
    """The binomial standard error of a top-1 ``top1`` measured on ``n`` test images."""
    if n < 1:
        raise ValueError(f"a top-1 needs at least one test image, got n={n}")
    return math.sqrt(max(top1 * (1.0 - top1), 0.0) / n)


def with_error(top1: float, n: int | None) -> str:
    """``0.8890 ± 0.0084``: a top-1 with its standard error, as every table prints it (the bare
    top-1 for a result stored without its count of test images)."""
    return f"{top1:.4f}" if n is None else f"{top1:.4f} ± {standard_error(top1, n):.4f}"


def difference_error(a: float, n_a: int, b: float, n_b: int) -> float:
    """The standard error of ``a - b`` (top-1s on ``n_a`` and ``n_b`` test images)."""
    return math.hypot(standard_error(a, n_a), standard_error(b, n_b))


def within_noise(a: float, n_a: int, b: float, n_b: int) -> bool:
    """Whether ``a`` and ``b`` differ by no more than :data:`NOISE_ERRORS` standard errors of their
    difference (two equal top-1s always: at 0 or 1 the binomial error is 0)."""
    return abs(a - b) <= NOISE_ERRORS * difference_error(a, n_a, b, n_b)


def gap_note(
    nat: tuple[float, int | None], low: tuple[float, int | None], high: tuple[float, int | None]
) -> tuple[float | None, str]:
    """(fraction, words) of the ``low`` -> ``high`` gap (random init -> supervised) that ``nat``
    recovers, each a (top-1, test images) pair. The fraction is None, and the words say why, when
    the gap itself or NAT's distance from ``low`` is within noise: a percentage of noise is
    meaningless (0.9 points on 1,400 images once read as "-109%"). Results stored without their
    count of test images get the fraction with a word that their noise is unknown."""
    (a, n_a), (lo, n_lo), (hi, n_hi) = nat, low, high
    if None in (n_a, n_lo, n_hi):
        if hi <= lo:
            return None, f"no gap to recover: supervised is not above random init ({hi - lo:+.1%})"
        fraction = (a - lo) / (hi - lo)
        return fraction, (
            f"{fraction:.0%} of the random-init -> supervised gap (noise unknown: a result was "
            "stored without its count of test images)"
        )
    if hi <= lo or within_noise(hi, n_hi, lo, n_lo):
        spread = NOISE_ERRORS * difference_error(hi, n_hi, lo, n_lo)
        return None, (
            f"no gap to recover: supervised {hi - lo:+.1%} over random init, within noise "
            f"(two standard errors: {spread:.1%})"
            if hi > lo
            else f"no gap to recover: supervised is not above random init ({hi - lo:+.1%})"
        )
    if within_noise(a, n_a, lo, n_lo):
        spread = NOISE_ERRORS * difference_error(a, n_a, lo, n_lo)
        return None, (
            f"within noise of random init ({a - lo:+.1%}; two standard errors: {spread:.1%})"
        )
    fraction = (a - lo) / (hi - lo)
    return fraction, f"{fraction:.0%} of the random-init -> supervised gap"
