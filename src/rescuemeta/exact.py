"""Exact posterior of the normal-normal random-effects model by 1-D numerical integration over tau,
as R bayesmeta computes it (Roever 2020, J Stat Softw 93(6)); no sampling, no Monte Carlo error.

Model: y_i ~ N(theta_i, s_i^2), theta_i ~ N(mu, tau^2), mu ~ N(m0, s0^2), tau ~ any prior from
:mod:`rescuemeta.priors`. Given tau, mu is conjugate normal, so every posterior quantity is a 1-D integral
over the marginal posterior of tau.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy import integrate, optimize, stats

from .priors import Prior


@dataclass
class NormalNormalPosterior:
    """Exact posterior for the normal-normal model.

    Parameters
    ----------
    y, s : array_like
        Study estimates (e.g. log OR) and their standard errors.
    tau_prior : Prior
        Heterogeneity prior (density on tau).
    mu_mean, mu_sd : float
        Normal prior on mu.
    """

    y: np.ndarray
    s: np.ndarray
    tau_prior: Prior
    mu_mean: float = 0.0
    mu_sd: float = 4.0

    def __post_init__(self):
        self.y = np.asarray(self.y, dtype=float)
        self.s = np.asarray(self.s, dtype=float)
        if self.y.shape != self.s.shape or self.y.ndim != 1 or len(self.y) == 0:
            raise ValueError("y and s must be 1-D arrays of the same, non-zero length")
        if np.any(~np.isfinite(self.s)) or np.any(self.s <= 0):
            raise ValueError("standard errors must be positive and finite")

    # ---- conditional on tau -----------------------------------------------------------------------
    def _conditional(self, tau: float):
        v = self.s**2 + tau**2
        prec = 1 / self.mu_sd**2 + np.sum(1 / v)
        b = self.mu_mean / self.mu_sd**2 + np.sum(self.y / v)
        c = self.mu_mean**2 / self.mu_sd**2 + np.sum(self.y**2 / v)
        loglik = (-0.5 * np.sum(np.log(2 * math.pi * v)) - 0.5 * math.log(2 * math.pi * self.mu_sd**2)
                  + 0.5 * math.log(2 * math.pi / prec) - 0.5 * (c - b**2 / prec))
        return b / prec, 1 / prec, loglik  # conditional mean and variance of mu, log marginal likelihood

    def _log_unnorm(self, tau: float) -> float:
        lp = float(self.tau_prior.logpdf(np.array([tau]))[0])
        if not np.isfinite(lp):
            return -np.inf
        return lp + self._conditional(tau)[2]

    @cached_property
    def _shift(self) -> float:
        grid = np.concatenate([[1e-8], np.geomspace(1e-4, max(10.0, 10 * float(np.std(self.y))), 400),
                               np.atleast_1d(self.tau_prior.ppf(np.linspace(0.001, 0.999, 99)))])
        vals = [self._log_unnorm(t) for t in grid]
        return float(np.max(vals))

    def _dens_unnorm(self, tau: float) -> float:
        return math.exp(self._log_unnorm(tau) - self._shift) if tau > 0 else 0.0

    @cached_property
    def _upper(self) -> float:
        if self.tau_prior.family == "uniform":
            return float(self.tau_prior.params[1])
        return math.inf

    @cached_property
    def _lower(self) -> float:
        return float(self.tau_prior.params[0]) if self.tau_prior.family == "uniform" else 0.0

    def _integrate(self, f, a: float = 0.0, b: float | None = None) -> float:
        b = self._upper if b is None else b
        a = max(a, self._lower)
        if b <= a:
            return 0.0
        # split at a few scale points so quad sees where the mass is
        pts = [p for p in (0.05, 0.2, 0.5, 1.0, 2.0, 5.0) if a < p < b]
        edges = [a, *pts, b]
        total = 0.0
        for lo, hi in zip(edges[:-1], edges[1:]):
            total += integrate.quad(f, lo, hi, limit=400, epsabs=1e-13, epsrel=1e-11)[0]
        return total

    @cached_property
    def _norm(self) -> float:
        return self._integrate(self._dens_unnorm)

    # ---- tau -------------------------------------------------------------------------------------
    def tau_pdf(self, tau):
        """Marginal posterior density of tau."""
        tau = np.atleast_1d(np.asarray(tau, dtype=float))
        return np.array([self._dens_unnorm(t) / self._norm for t in tau])

    def tau_cdf(self, tau: float) -> float:
        """P(tau <= value | data)."""
        if tau <= 0:
            return 0.0
        return min(1.0, self._integrate(self._dens_unnorm, 0.0, min(tau, self._upper)) / self._norm)

    def tau_quantile(self, q: float) -> float:
        """Posterior quantile of tau."""
        hi = 1.0
        while self.tau_cdf(hi) < q:
            hi *= 2
        return float(optimize.brentq(lambda t: self.tau_cdf(t) - q, 0.0, hi, xtol=1e-10))

    # ---- mu and the predictive effect ------------------------------------------------------------
    def _mix_cdf(self, x: float, predictive: bool) -> float:
        def f(t):
            m, v, _ = self._conditional(t)
            if predictive:
                v = v + t**2
            return stats.norm.cdf((x - m) / math.sqrt(v)) * self._dens_unnorm(t)

        return self._integrate(f) / self._norm

    def mu_cdf(self, x: float) -> float:
        """P(mu <= x | data), exact."""
        return self._mix_cdf(x, False)

    def predictive_cdf(self, x: float) -> float:
        """P(theta_new <= x | data): the effect in a new study, exact."""
        return self._mix_cdf(x, True)

    def _mix_quantile(self, q: float, predictive: bool) -> float:
        m, v, _ = self._conditional(self.tau_quantile(0.5))
        sd = math.sqrt(v + (self.tau_quantile(0.5) ** 2 if predictive else 0))
        lo, hi = m - 10 * sd - 1, m + 10 * sd + 1
        while self._mix_cdf(lo, predictive) > q:
            lo -= 10 * sd
        while self._mix_cdf(hi, predictive) < q:
            hi += 10 * sd
        return float(optimize.brentq(lambda x: self._mix_cdf(x, predictive) - q, lo, hi, xtol=1e-10))

    def mu_quantile(self, q: float) -> float:
        """Posterior quantile of mu."""
        return self._mix_quantile(q, False)

    def predictive_quantile(self, q: float) -> float:
        """Quantile of the effect in a new study."""
        return self._mix_quantile(q, True)

    def mu_posterior_mean(self) -> float:
        """Posterior mean of mu."""
        return self._integrate(lambda t: self._conditional(t)[0] * self._dens_unnorm(t)) / self._norm

    def summary(self) -> dict:
        """Median and 95% equal-tailed intervals of mu, tau and the predictive effect."""
        return {
            "mu": {"q025": self.mu_quantile(0.025), "q50": self.mu_quantile(0.5), "q975": self.mu_quantile(0.975),
                   "mean": self.mu_posterior_mean()},
            "tau": {"q025": self.tau_quantile(0.025), "q50": self.tau_quantile(0.5),
                    "q975": self.tau_quantile(0.975)},
            "theta_new": {"q025": self.predictive_quantile(0.025), "q50": self.predictive_quantile(0.5),
                          "q975": self.predictive_quantile(0.975)},
        }
