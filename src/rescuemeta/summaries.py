"""The summaries stage: posterior draws on the natural scales (OR, RR, RD, rates, the effect in a new
study), and the numbers every result reports for a quantity.

Conventions
-----------
* ``contrast`` model: ``mu`` is the pooled log odds ratio. RR and RD are not parameters of that model;
  they are evaluated at a baseline (control-arm) risk ``p0`` (:attr:`rescuemeta.fit.FitResult.control_risk`:
  by default the median observed control-arm risk of the included studies, or a risk the user gives, or per
  draw the mean of the study baselines ``mean_i expit(alpha_i)``). Then ``p1 = expit(logit(p0) + log OR)``,
  ``RR = p1 / p0``, ``RD = p1 - p0``. The population-averaged (marginal) RR of a model with hierarchical
  baselines is :meth:`rescuemeta.fit.FitResult.marginal_risks`.
* ``normal`` model on log RR: ``RD = p0 (RR - 1)`` at a given ``p0``; on log OR as for ``contrast``.
* ``proportion`` model: ``rate = expit(mu)``; ``rate_new = expit(theta_new)``.
* ``*_new``: the effect in a new study, ``theta_new = mu + tau * e``, ``e ~ N(0, 1)`` (one per draw).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from scipy.special import expit, logit

from .defaults import HDI_PROB

__all__ = ["STAT_KEYS", "absolute_effects", "baseline_risk", "kde", "new_study_draws", "population_mean_rate", "ratio_scales",
           "summarize"]

STAT_KEYS = ("mean", "sd", "q025", "q50", "q975", "hdi_low", "hdi_high")


def summarize(draws) -> dict:
    """Summary numbers of one scalar quantity from its posterior draws.

    Parameters
    ----------
    draws : array_like
        Draws of any shape (e.g. chain x draw); flattened.

    Returns
    -------
    dict
        ``mean``, ``sd``; ``q025``, ``q50``, ``q975`` (the 2.5%, 50%, 97.5% quantiles: ``q025``-``q975`` is
        the 95% equal-tailed credible interval); ``hdi_low``, ``hdi_high`` (the 95% highest-density interval
        from :func:`arviz.hdi`, the shortest interval holding 95% of the draws).
    """
    import arviz as az

    x = np.asarray(draws, dtype=float).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {k: None for k in STAT_KEYS}
    q = np.quantile(x, [0.025, 0.5, 0.975])
    h = az.hdi(x, hdi_prob=HDI_PROB)
    return {"mean": float(np.mean(x)), "sd": float(np.std(x, ddof=1)) if x.size > 1 else 0.0,
            "q025": float(q[0]), "q50": float(q[1]), "q975": float(q[2]),
            "hdi_low": float(h[0]), "hdi_high": float(h[1])}


@contextmanager
def arviz_numpy() -> Iterator[None]:
    """ArviZ's NumPy code paths within the block (its own flag, ``arviz.Numba``, restored after).

    With numba installed ArviZ jit-compiles some of its functions on their first call in a process, without a disk
    cache: the variance behind R-hat and ESS 0.15-0.4 s, the MCSE's square root 0.08 s, its KDE histogram 7.8 s into
    an empty numba cache (issue 19: every fit's diagnostics, every new process). The NumPy paths give the same
    numbers (tested) and take as long per call on a fit's draws (R-hat + bulk + tail ESS of 34 variables x 4000
    draws: 95 ms either way, measured).
    """
    import arviz as az

    flag = az.Numba.numba_flag
    az.Numba.numba_flag = False
    try:
        yield
    finally:
        az.Numba.numba_flag = flag


def kde(draws, bound_correction: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """ArviZ's kernel density estimate (:func:`arviz.kde`: grid and density) on ArviZ's NumPy path
    (:func:`arviz_numpy`: its numba histogram took 7.8 s to compile on a process's first KDE in an empty numba
    cache, against 5-7 ms per call for the NumPy path, the same histogram, measured on 4000 draws)."""
    import arviz as az

    with arviz_numpy():
        return az.kde(np.asarray(draws, dtype=float), bound_correction=bound_correction)


def ratio_scales(log_effect, measure: str, p0=None) -> dict:
    """Natural-scale draws from draws of a log OR or log RR at baseline risk ``p0``.

    Parameters
    ----------
    log_effect : ndarray
        Draws of log OR (``measure="OR"``) or log RR (``measure="RR"``).
    measure : {"OR", "RR"}
    p0 : float or ndarray or None
        Baseline (control-arm) risk; scalar or one value per draw (broadcast). ``None`` gives only the
        ratio itself.

    Returns
    -------
    dict
        ``or`` or ``rr`` (the ratio); with ``p0``: ``rr`` and ``rd`` (risk difference, treatment minus control:
        negative means fewer events with treatment), and ``p1``, the treatment-arm risk. For a log RR,
        ``p1 = p0 RR`` can exceed 1 for large RR; such draws are kept as they are (the RD is then > 1 - p0).
    """
    le = np.asarray(log_effect, dtype=float)
    if measure == "OR":
        with np.errstate(over="ignore"):  # a predictive draw under a heavy-tailed tau prior can exceed exp(709)
            out = {"or": np.exp(le)}
        if p0 is not None:
            p0 = np.asarray(p0, dtype=float)
            p1 = expit(logit(p0) + le)
            out.update(rr=p1 / p0, rd=p1 - p0, p1=p1)
        return out
    if measure == "RR":
        with np.errstate(over="ignore"):
            out = {"rr": np.exp(le)}
        if p0 is not None:
            p0 = np.asarray(p0, dtype=float)
            with np.errstate(over="ignore"):
                p1 = p0 * np.exp(le)
            out.update(rd=p1 - p0, p1=p1)
        return out
    raise ValueError(f"ratio scales need OR or RR, not {measure!r}")


def absolute_effects(mu_quantile, measure: str, acrs, better: str | None = None,
                     labels=None) -> list[dict]:
    """Absolute effects at assumed control risks (GRADE summary-of-findings practice; Cochrane Handbook ch. 14):
    for each control risk p0, events per 1000 without and with treatment and their difference, from the pooled
    ratio. The treatment risk is expit(logit p0 + log OR), or p0 RR capped at 1, increasing in the log ratio, so
    its quantiles are the transformed quantiles of the log ratio (exact for an exact posterior).

    Parameters
    ----------
    mu_quantile : callable
        ``q -> quantile of the pooled log ratio``.
    measure : {"OR", "RR"}
    acrs : sequence of float
        Assumed control risks, each in (0, 1).
    better : {"lower", "higher"} or None
        Which direction is benefit (None: fewer events), for the NNT's sense.
    labels : sequence of str, optional
        A name per control risk (e.g. low / moderate / high).

    Returns
    -------
    list of dict
        Per control risk: ``acr``, ``label``, ``control_per_1000``, ``treatment_per_1000`` and ``rd_per_1000``
        (treatment minus control) as ``{q50, q025, q975}``, ``capped`` (an RR put the risk above 1 for some
        quantile), and ``nnt``: ``{value, sense}`` at the median difference (NNTB where the difference is a
        benefit in the declared direction, NNTH where it is a harm; None when the median difference is 0).
    """
    out = []
    qs = {"q025": 0.025, "q50": 0.5, "q975": 0.975}
    log_q = {k: float(mu_quantile(v)) for k, v in qs.items()}
    for i, p0 in enumerate(acrs):
        p0 = float(p0)
        if measure == "OR":
            p1 = {k: float(expit(logit(p0) + v)) for k, v in log_q.items()}
            capped = False
        elif measure == "RR":
            raw = {k: p0 * float(np.exp(v)) for k, v in log_q.items()}
            capped = any(v > 1 for v in raw.values())
            p1 = {k: min(v, 1.0) for k, v in raw.items()}
        else:
            raise ValueError(f"absolute effects need OR or RR, not {measure!r}")
        rd = {k: v - p0 for k, v in p1.items()}
        nnt = None
        if rd["q50"] != 0:
            benefit = rd["q50"] > 0 if better == "higher" else rd["q50"] < 0
            nnt = {"value": 1 / abs(rd["q50"]), "sense": "NNTB" if benefit else "NNTH"}
        out.append({"acr": p0, "label": labels[i] if labels is not None else f"{p0:g}",
                    "control_per_1000": 1000 * p0,
                    "treatment_per_1000": {k: 1000 * v for k, v in p1.items()},
                    "rd_per_1000": {k: 1000 * v for k, v in rd.items()}, "capped": capped, "nnt": nnt})
    return out


def new_study_draws(mu, tau, seed: int) -> np.ndarray:
    """One draw of the effect in a new study per posterior draw: ``mu + tau * e``, ``e ~ N(0, 1)``."""
    mu = np.asarray(mu, dtype=float)
    rng = np.random.default_rng([seed, 20260101])
    return mu + np.asarray(tau, dtype=float) * rng.standard_normal(mu.shape)


def population_mean_rate(mu, tau, step: float = 0.05) -> np.ndarray:
    """E[expit(mu + tau z)] over z ~ N(0, 1), per draw: the mean event rate over the population of studies.
    expit(mu) is the rate of the median study; the mean is pulled towards 1/2 by the spread tau.

    The integral is the trapezoid rule on z in [-9, 9] with spacing ``step``: for an integrand analytic in a strip
    of half-width pi / tau (the poles of expit) its error falls like exp(-2 pi^2 / (tau step)), below 1e-17 for
    tau < 10 and 1e-12 for tau < 14 at the default step (checked against adaptive quadrature in
    tests/test_estimands.py, tau up to 13); Gauss-Hermite with 40 nodes was off by 7e-5 at tau = 4. (The
    step was 0.02 until session 14: 2.5 times the nodes for no digit that shows.)

    Returns
    -------
    ndarray
        The shape of ``mu`` (and ``tau``).
    """
    z = np.arange(-9.0, 9.0 + step / 2, step)
    w = step * np.exp(-0.5 * z**2) / np.sqrt(2 * np.pi)
    mu, tau = np.broadcast_arrays(np.asarray(mu, dtype=float), np.asarray(tau, dtype=float))
    flat_mu, flat_tau = mu.ravel(), tau.ravel()
    out = np.empty(flat_mu.shape)
    for i in range(0, flat_mu.size, 2000):  # blocks of draws: bounded memory
        sl = slice(i, i + 2000)
        out[sl] = expit(flat_mu[sl, None] + flat_tau[sl, None] * z) @ w
    return out.reshape(mu.shape)


def baseline_risk(alpha) -> np.ndarray:
    """Mean control-arm risk of the included studies per draw: ``mean_i expit(alpha_i)`` (last axis)."""
    return np.mean(expit(np.asarray(alpha, dtype=float)), axis=-1)
