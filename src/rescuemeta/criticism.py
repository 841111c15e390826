"""The model-criticism stage: does one study drive the pooled effect, did it change as studies accrued, do small
studies report larger effects, and how well does each study's result follow from the others?

Frequentist, as metafor 3.8 computes them on an ``rma(yi, vi, method, test)`` fit (intercept only):

* :func:`leave1out` (metafor ``leave1out``): the pooled result without each study in turn;
* :func:`influence` (metafor ``influence``): externally standardised residuals, DFFITS, Cook's distance,
  covariance ratio, tau^2 and Q without the study, hat value and weight;
* :func:`cumulative` (metafor ``cumul``): the pooled result as studies are added in a given order;
* :func:`regtest` (metafor ``regtest`` defaults: the standard error as predictor in a meta-regression fitted with
  the same method and test) and :func:`trimfill` (metafor ``trimfill`` defaults: L0 estimator, the side chosen by
  the sign of the Egger slope).

Bayesian: :func:`exact_loo`, leave-one-study-out predictive densities log p(y_i | y_-i) of the normal model by
quadrature (no Monte Carlo error).

Every function returns plain dicts (JSON-ready); references are pinned from metafor by
``validation/criticism_reference.R`` and checked in ``tests/test_criticism_metafor_parity.py``.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputError, NotEstimable
from .freq import rma_iv

__all__ = ["leave1out", "influence", "cumulative", "regtest", "trimfill", "exact_loo", "MIN_STUDIES_BIAS"]

MIN_STUDIES_BIAS = 10  # tests for small-study effects have little power below 10 studies (Cochrane Handbook 13.3.5.4)


def _arrays(yi, vi):
    y, v = np.asarray(yi, dtype=float), np.asarray(vi, dtype=float)
    if y.shape != v.shape or y.ndim != 1:
        raise ValueError("yi and vi must be 1-D arrays of the same length")
    if not (np.isfinite(y).all() and np.isfinite(v).all() and (v > 0).all()):
        raise NotEstimable("every study needs a finite estimate and a positive variance")
    return y, v


def _s2w(y, v, tau2, mu, hksj: bool) -> float:
    """The Knapp-Hartung factor of a fit (1 for z tests)."""
    if not hksj or len(y) < 2:
        return 1.0
    w = 1 / (v + tau2)
    return float(np.sum(w * (y - mu) ** 2) / (len(y) - 1))


def leave1out(yi, vi, *, method: str = "REML", hksj: bool = False, level: float = 0.95) -> list[dict]:
    """The pooled result without each study (metafor ``leave1out``).

    Returns
    -------
    list of dict
        One per study, in input order: ``estimate, se, ci_low, ci_high, pval, q, tau2, i2, k`` of the fit without
        it (analysis scale). A study whose removal moves the estimate across the null, or the CI's far end, is
        one the conclusion depends on.
    """
    y, v = _arrays(yi, vi)
    if len(y) < 3:
        raise NotEstimable(f"leave-one-out needs at least 3 studies (has {len(y)})")
    out = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        r = rma_iv(y[keep], v[keep], method=method, hksj=hksj, level=level)
        out.append({"estimate": r.estimate, "se": r.se, "ci_low": r.ci_low, "ci_high": r.ci_high, "pval": r.pval,
                    "q": r.q, "tau2": r.tau2, "i2": r.i2, "k": r.k})
    return out


def influence(yi, vi, *, method: str = "REML", hksj: bool = False) -> list[dict]:
    """Case-deletion diagnostics (metafor ``influence.rma.uni``, intercept-only model).

    Returns
    -------
    list of dict
        One per study: ``rstudent`` (the study's deviation from the pooled effect of the others, in standard
        errors of that prediction: beyond +-2 is unusual), ``dffits`` (change in the pooled effect, scaled),
        ``cook_d`` (Cook's distance: squared change in the estimate over its variance), ``cov_r`` (ratio of the
        estimate's variance without and with the study: < 1 means the study adds imprecision), ``tau2_del`` and
        ``q_del`` (tau^2 and Q without it), ``hat`` (leverage, 0-1) and ``weight`` (percent).
    """
    y, v = _arrays(yi, vi)
    k = len(y)
    if k < 3:
        raise NotEstimable(f"influence diagnostics need at least 3 studies (has {k})")
    full = rma_iv(y, v, method=method, hksj=hksj)
    w = 1 / (v + full.tau2)
    hat = w / w.sum()
    vb = full.se**2
    out = []
    for i in range(k):
        keep = np.arange(k) != i
        r = rma_iv(y[keep], v[keep], method=method, hksj=hksj)
        s2w = _s2w(y[keep], v[keep], r.tau2, r.estimate, hksj)
        vdel = r.se**2
        resid = y[i] - r.estimate
        if abs(resid) < 100 * np.finfo(float).eps:
            resid = 0.0
        seresid = math.sqrt(v[i] * s2w + vdel + r.tau2 * s2w)
        dfb = full.estimate - r.estimate
        out.append({"rstudent": resid / seresid,
                    "dffits": dfb / math.sqrt(s2w * hat[i] * (r.tau2 + v[i])),
                    "cook_d": dfb**2 / vb, "cov_r": vdel / vb, "tau2_del": r.tau2, "q_del": r.q,
                    "hat": float(hat[i]), "weight": float(100 * hat[i])})
    return out


def cumulative(yi, vi, order=None, *, method: str = "REML", hksj: bool = False, level: float = 0.95) -> list[dict]:
    """The pooled result as studies are added (metafor ``cumul``), in the order of ``order`` (ties and a missing
    order: input order).

    Returns
    -------
    list of dict
        Step j: ``index`` (the study added, as an input position), ``k`` = j, ``estimate, se, ci_low, ci_high,
        pval, tau2, i2, q`` of the first j studies.
    """
    y, v = _arrays(yi, vi)
    idx = np.arange(len(y)) if order is None else np.argsort(np.asarray(order, dtype=float), kind="stable")
    out = []
    for j in range(1, len(y) + 1):
        sel = idx[:j]
        r = rma_iv(y[sel], v[sel], method=method, hksj=hksj and j > 1, level=level)
        out.append({"index": int(idx[j - 1]), "k": j, "estimate": r.estimate, "se": r.se, "ci_low": r.ci_low,
                    "ci_high": r.ci_high, "pval": r.pval, "tau2": r.tau2, "i2": r.i2, "q": r.q})
    return out


def _check_bias_k(k: int, force: bool) -> None:
    if k < MIN_STUDIES_BIAS and not force:
        raise InputError(f"{k} studies: tests for small-study effects have too little power below "
                         f"{MIN_STUDIES_BIAS} studies to tell asymmetry from chance (Cochrane Handbook 13.3.5.4); "
                         "--force runs them anyway")
    if k < 3:
        raise NotEstimable(f"small-study tests need at least 3 studies (has {k})")


def regtest(yi, vi, *, method: str = "REML", hksj: bool = False, level: float = 0.95, force: bool = False) -> dict:
    """Egger-type regression test (metafor ``regtest`` defaults): a meta-regression on the standard error with the
    model's method and test.

    Returns
    -------
    dict
        ``z`` (or t with ``hksj``), ``df`` (None for z), ``pval`` (a small p-value: the effect changes with study
        precision, one sign of small-study effects or publication bias), and the ``limit_estimate`` with
        ``ci_low``/``ci_high``: the effect of an infinitely precise study (the intercept).
    """
    from .metareg import Design, rma_mods

    y, v = _arrays(yi, vi)
    _check_bias_k(len(y), force)
    X = np.column_stack([np.ones(len(y)), np.sqrt(v)])
    res = rma_mods(y, v, Design(X, ["intrcpt", "sei"], np.ones(len(y), dtype=bool)), method=method, hksj=hksj,
                   level=level)
    c, b = res.coefficients["sei"], res.coefficients["intrcpt"]
    return {"z": c["estimate"] / c["se"], "df": len(y) - 2 if hksj else None, "pval": c["pval"],
            "limit_estimate": b["estimate"], "ci_low": b["ci_low"], "ci_high": b["ci_high"], "method": method,
            "predictor": "sei", "k": len(y)}


def trimfill(yi, vi, *, method: str = "REML", level: float = 0.95, maxiter: int = 100, force: bool = False) -> dict:
    """Duval & Tweedie's trim and fill (metafor ``trimfill`` defaults: estimator L0, side from the sign of the
    slope on the standard error).

    Returns
    -------
    dict
        ``k0`` (studies estimated missing), ``se_k0``, ``side`` (where they are missing), and the pooled
        ``estimate, se, ci_low, ci_high`` and ``k`` after filling them in (z test). A filled estimate closer to
        the null is a sensitivity analysis, not a correction.
    """
    from .metareg import Design, rma_mods

    y0, v0 = _arrays(yi, vi)
    k = len(y0)
    _check_bias_k(k, force)
    slope = rma_mods(y0, v0, Design(np.column_stack([np.ones(k), np.sqrt(v0)]), ["intrcpt", "sei"],
                                    np.ones(k, dtype=bool)), method=method).coefficients["sei"]["estimate"]
    side = "right" if slope < 0 else "left"
    y = -y0 if side == "right" else y0.copy()
    ix = np.argsort(y, kind="stable")
    y, v = y[ix], v0[ix]
    k0, k0_prev, it = 0, -1, 0
    beta, se_k0, yc = 0.0, 0.0, y
    while k0 != k0_prev:
        k0_prev = k0
        it += 1
        if it > maxiter:
            raise NotEstimable("trim and fill did not converge")
        beta = rma_iv(y[: k - k0], v[: k - k0], method=method).estimate
        yc = y - beta
        order = np.argsort(np.abs(yc), kind="stable")
        ranks = np.empty(k)
        ranks[order] = np.arange(1, k + 1)
        signed = np.sign(yc) * ranks
        sr = float(signed[signed > 0].sum())
        k0f = (4 * sr - k * (k + 1)) / (2 * k - 1)
        var_sr = (k * (k + 1) * (2 * k + 1) + 10 * k0f**3 + 27 * k0f**2 + 17 * k0f - 18 * k * k0f**2
                  - 18 * k * k0f + 6 * k**2 * k0f) / 24
        se_k0 = max(0.0, 4 * math.sqrt(var_sr) / (2 * k - 1)) if var_sr > 0 else 0.0
        k0 = max(0, int(round(k0f)))
    if k0 > 0:
        yc = -(yc - beta) if side == "right" else yc - beta
        y_fill = np.concatenate([y0, -yc[k - k0:]])
        v_fill = np.concatenate([v0, v[k - k0:]])
        r = rma_iv(y_fill, v_fill, method=method, level=level)
    else:
        r = rma_iv(y0, v0, method=method, level=level)
    return {"k0": k0, "se_k0": se_k0, "side": side, "estimate": r.estimate, "se": r.se, "ci_low": r.ci_low,
            "ci_high": r.ci_high, "pval": r.pval, "tau2": r.tau2, "k": r.k, "estimator": "L0", "method": method}


def exact_loo(y, s, tau_prior, mu_mean: float = 0.0, mu_sd: float = 4.0) -> dict:
    """Exact leave-one-study-out for the normal-normal model: elpd_i = log p(y_i | y_-i) =
    log sum_j w_j N(y_i; m_j, v_j + s_i^2 + t_j^2) over the quadrature grid of the posterior given the other
    studies (:class:`rescuemeta.exact.NormalNormalPosterior`), so there is no Monte Carlo or importance-sampling
    error.

    Returns
    -------
    dict
        ``elpd_loo`` (sum over studies: higher is better predictive fit), ``studies``: one ``{elpd, pit}`` per
        study (``pit``: P(a new y_i <= observed | y_-i); near 0 or 1 flags a study the others do not predict).
    """
    from scipy import special, stats

    from .exact import NormalNormalPosterior

    y, s = np.asarray(y, dtype=float), np.asarray(s, dtype=float)
    if len(y) < 2:
        raise NotEstimable("leave-one-out needs at least 2 studies")
    studies = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        ex = NormalNormalPosterior(y[keep], s[keep], tau_prior, mu_mean, mu_sd)
        t, w, m, v = ex._grid
        sd = np.sqrt(v + s[i] ** 2 + t**2)
        logd = stats.norm.logpdf(y[i], m, sd)
        elpd = float(special.logsumexp(logd, b=w))
        pit = float(np.sum(w * special.ndtr((y[i] - m) / sd)))
        studies.append({"elpd": elpd, "pit": pit})
    return {"elpd_loo": float(sum(x["elpd"] for x in studies)), "studies": studies}
