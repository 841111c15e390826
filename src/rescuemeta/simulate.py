"""Simulated meta-analyses: data drawn from a chosen truth or from the prior, for simulation-based
calibration (Talts et al. 2018) and for simulation studies that compare tau priors with few studies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.special import expit

from .models import ModelData
from .priors import Prior
from .sampling import TARGET_ACCEPT, Sampler


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


@dataclass
class SBCResult:
    """Ranks of the true values among thinned posterior draws, one row per simulated data set.

    ``ranks[name]`` takes values 0..``n_draws``; under a correct sampler and model they are uniform.
    ``divergent`` counts fits with any divergent transition (they are kept: dropping them would bias SBC).
    """

    ranks: dict
    n_draws: int
    n_sims: int
    divergent: int

    def chi2_pvalue(self, name: str, bins: int = 10) -> float:
        """Chi-square test of uniformity of ``ranks[name]`` over ``bins`` equal bins of the rank range.

        Returns
        -------
        float
            A small p-value (e.g. < 0.001) means the ranks are not uniform: the posterior is miscalibrated.
        """
        r = np.asarray(self.ranks[name])
        edges = np.linspace(0, self.n_draws + 1, bins + 1)
        counts, _ = np.histogram(r, bins=edges)
        return float(stats.chisquare(counts).pvalue)

    def coverage(self, name: str, level: float = 0.9) -> float:
        """Share of simulations whose central ``level`` interval contains the truth (should be ``level``)."""
        r = np.asarray(self.ranks[name]) / self.n_draws
        lo = (1 - level) / 2
        return float(np.mean((r >= lo) & (r <= 1 - lo)))


def sbc(kind: str, tau_prior: Prior, effect_prior: Prior, baseline_prior: Prior | None = None, *, n_sims: int = 100,
        k: int = 5, draws: int = 500, tune: int = 500, chains: int = 2, n_thin: int = 99, seed: int = 1,
        target_accept: float = TARGET_ACCEPT, sampler: Sampler | None = None) -> SBCResult:
    """Simulation-based calibration: draw (mu, tau[, alpha]) from the prior, data from the model, fit, and rank
    the truth among ``n_thin`` evenly thinned posterior draws.

    Returns
    -------
    SBCResult
    """
    sampler = sampler or Sampler()
    rng = np.random.default_rng(seed)
    ranks: dict[str, list[int]] = {"mu": [], "tau": []}
    divergent = 0
    for i in range(n_sims):
        mu = float(effect_prior.sample(rng, 1)[0])
        tau = float(tau_prior.sample(rng, 1)[0])
        alpha = baseline_prior.sample(rng, k) if (kind == "contrast" and baseline_prior is not None) else None
        md, _ = simulate_counts(kind, rng, mu=mu, tau=tau, k=k, alpha=alpha)
        idata, diag = sampler.sample(md, tau_prior, effect_prior, baseline_prior if kind == "contrast" else None,
                                     draws=draws, tune=tune, chains=chains, seed=seed * 100003 + i, guard=False,
                                     target_accept=target_accept)
        divergent += int(diag.divergences > 0)
        for name, truth in (("mu", mu), ("tau", tau)):
            x = idata.posterior[name].values.ravel(order="F")  # interleave chains before thinning
            idx = np.linspace(0, x.size - 1, n_thin).round().astype(int)
            ranks[name].append(int(np.sum(x[idx] < truth)))
    return SBCResult({k_: np.array(v) for k_, v in ranks.items()}, n_thin, n_sims, divergent)
