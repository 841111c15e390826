"""Simulated meta-analyses: data drawn from a chosen truth or from the prior, for simulation-based
calibration (Talts et al. 2018) and for simulation studies that compare tau priors with few studies.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from .models import ModelData


def simulate_counts(kind: str, rng: np.random.Generator, *, mu: float, tau: float, k: int, n_min: int = 40,
                    n_max: int = 120, alpha=None) -> tuple[ModelData, np.ndarray]:
    """One meta-analysis of ``k`` studies from the hierarchical model with known ``mu`` and ``tau``.

    Parameters
    ----------
    kind : {"contrast", "proportion"}
    rng : numpy.random.Generator
    mu, tau : float
        Pooled effect (log OR, or logit rate) and between-study SD.
    k : int
    n_min, n_max : int
        Arm sizes are drawn uniformly from this range (inclusive).
    alpha : array_like, optional
        Control-arm logits per study (``contrast``); required for ``contrast``.

    Returns
    -------
    (ModelData, ndarray)
        The counts, and the true study effects theta_i.
    """
    theta = mu + tau * rng.standard_normal(k)
    n1 = rng.integers(n_min, n_max + 1, k)
    if kind == "proportion":
        ai = rng.binomial(n1, expit(theta))
        return ModelData("proportion", {"ai": ai, "n1i": n1}), theta
    if kind != "contrast":
        raise ValueError(f"simulation supports contrast and proportion, not {kind!r}")
    alpha = np.asarray(alpha, dtype=float)
    n2 = rng.integers(n_min, n_max + 1, k)
    ai = rng.binomial(n1, expit(alpha + theta))
    ci = rng.binomial(n2, expit(alpha))
    return ModelData("contrast", {"ai": ai, "n1i": n1, "ci": ci, "n2i": n2}), theta
