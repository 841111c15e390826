"""Study-level effect sizes and sampling variances (the ``escalc`` stage).

Measures follow R metafor's ``escalc``: ``OR`` (log odds ratio), ``RR`` (log risk ratio), ``RD`` (risk
difference), all treatment versus control, and ``PLO`` (logit of a single-arm proportion).

Continuity correction, as metafor: with ``to="only0"`` (the default) ``add`` (default 1/2) is added to
every cell of a study that has a zero cell; ``"all"`` adds it to every study, ``"if0all"`` to every study
if any has a zero cell, ``"none"`` never (such studies then have no finite estimate and drop out).
``drop00=True`` drops double-zero studies (no events in either arm, or all events in both arms) before
any correction, as the Cochrane Handbook recommends; metafor's ``rma()`` keeps them by default
(``drop00=FALSE``), so pass ``drop00=False`` to reproduce that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import NotEstimable

__all__ = ["TWO_ARM_MEASURES", "CC_TARGETS", "ContinuityCorrection", "EffectSizes", "escalc"]

TWO_ARM_MEASURES = ("OR", "RR", "RD")
CC_TARGETS = ("only0", "all", "if0all", "none")


@dataclass(frozen=True)
class ContinuityCorrection:
    """How zero cells are handled for inverse-variance methods (see module docstring)."""

    add: float = 0.5
    to: str = "only0"
    drop00: bool = True

    def __post_init__(self):
        if self.to not in CC_TARGETS:
            raise NotEstimable(f"continuity correction 'to' must be one of {CC_TARGETS}, got {self.to!r}")
        if not np.isfinite(self.add) or self.add < 0:
            raise NotEstimable(f"continuity correction 'add' must be a finite number >= 0, got {self.add!r}")


@dataclass(frozen=True)
class EffectSizes:
    """Per-study estimates on the analysis scale.

    ``yi`` and ``vi`` are NaN for studies that cannot contribute (double zero with ``drop00``, or a zero
    cell with no correction); ``usable`` marks the others.
    """

    yi: np.ndarray
    vi: np.ndarray

    @property
    def usable(self) -> np.ndarray:
        return np.isfinite(self.yi) & np.isfinite(self.vi) & (self.vi > 0)


def _corrected(cells: list[np.ndarray], cc: ContinuityCorrection) -> list[np.ndarray]:
    cells = [np.asarray(c, dtype=float) for c in cells]
    if cc.to == "none" or cc.add == 0:
        return cells
    if cc.to == "all":
        return [c + cc.add for c in cells]
    has0 = np.zeros_like(cells[0], dtype=bool)
    for c in cells:
        has0 |= c == 0
    if cc.to == "if0all":
        return [c + cc.add for c in cells] if has0.any() else cells
    return [np.where(has0, c + cc.add, c) for c in cells]


def escalc(measure: str, ai, n1i, ci=None, n2i=None,
           cc: ContinuityCorrection = ContinuityCorrection()) -> EffectSizes:
    """Effect size and sampling variance per study.

    Parameters
    ----------
    measure : {"OR", "RR", "RD", "PLO"}
    ai, n1i : array_like
        Events and total in the treatment arm (for ``PLO``: the single arm).
    ci, n2i : array_like, optional
        Events and total in the control arm (two-arm measures only).
    cc : ContinuityCorrection

    Returns
    -------
    EffectSizes
        ``yi`` on the analysis scale (log OR, log RR, RD or logit p) and its large-sample variance ``vi``
        (metafor's ``vtype="LS"``). NaN marks a study that cannot contribute.
    """
    ai = np.asarray(ai, dtype=float)
    n1i = np.asarray(n1i, dtype=float)
    if measure == "PLO":
        xi, mi = _corrected([ai, n1i - ai], cc)
        with np.errstate(divide="ignore", invalid="ignore"):
            yi = np.log(xi / mi)
            vi = 1.0 / xi + 1.0 / mi
        bad = ~np.isfinite(yi) | ~np.isfinite(vi)
        return EffectSizes(np.where(bad, np.nan, yi), np.where(bad, np.nan, vi))
    if measure not in TWO_ARM_MEASURES:
        raise NotEstimable(f"unknown measure {measure!r}")
    ci = np.asarray(ci, dtype=float)
    n2i = np.asarray(n2i, dtype=float)
    bi, di = n1i - ai, n2i - ci
    double0 = ((ai == 0) & (ci == 0)) | ((bi == 0) & (di == 0))
    a, b, c, d = _corrected([ai, bi, ci, di], cc)
    n1, n2 = a + b, c + d
    with np.errstate(divide="ignore", invalid="ignore"):
        if measure == "OR":
            yi = np.log((a * d) / (b * c))
            vi = 1 / a + 1 / b + 1 / c + 1 / d
        elif measure == "RR":
            yi = np.log((a / n1) / (c / n2))
            vi = 1 / a - 1 / n1 + 1 / c - 1 / n2
        else:  # RD
            p1, p2 = a / n1, c / n2
            yi = p1 - p2
            vi = p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2
    bad = ~np.isfinite(yi) | ~np.isfinite(vi)
    if cc.drop00:
        bad |= double0
    return EffectSizes(np.where(bad, np.nan, yi), np.where(bad, np.nan, vi))
