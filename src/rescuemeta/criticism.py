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

__all__ = ["order_key", "leave1out", "influence", "cumulative", "regtest", "trimfill", "exact_loo", "loo_benefit",
           "predictive_checks", "integrated_loglik", "conditional_loglik", "psis_loo", "MIN_STUDIES_BIAS"]

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


def order_key(values, column: str = "order") -> list[float]:
    """Sort keys for :func:`cumulative` from a column's values: numbers (numeric strings too); missing values
    (None, blank, NaN) become NaN and sort last. InputError for any other text."""
    out = []
    for v in values:
        if v is None or (isinstance(v, str) and not v.strip()):
            out.append(math.nan)
            continue
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise InputError(f"{column}: {v!r} is not a number; the order column must be numeric (e.g. year)") from None
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


# ---------------------------------------------------------------------------------------------------
# Bayesian: the answer without each study, and posterior predictive checks
# ---------------------------------------------------------------------------------------------------

def loo_benefit(table, cfg, query: str, *, sampler=None, draws: int | None = 500, cache_dir=None, res=None,
                k_threshold: float = 0.5) -> list[dict]:
    """The answer that matters with each study left out: P(``query``) and the pooled effect (natural scale: the
    model's ratio or rate, median and 95% CrI) without study i.

    With ``res`` (the full fit of ``cfg``) of a binomial model (independent baselines, no moderators) and a query
    on OR, rate or tau, the posterior without study i is the full posterior reweighted by 1 / p(y_i | mu, tau)
    (Pareto-smoothed importance sampling, the study's random effect integrated out: :func:`study_loglik`); a
    study whose Pareto k-hat exceeds ``k_threshold`` is refitted instead, as brms's ``reloo`` (0.5, stricter than
    the 0.7 used for elpd: on the rescue rows a study at k-hat 0.68 moved P(benefit) by 3 points against its
    refit, at 0.6 and below the two agreed within their Monte Carlo errors). Otherwise (and for
    the normal model, exact and cheap) ``cfg`` is refitted without the study (``exclude_studies``) with ``draws``
    per chain (default 500, at most the fit's own; the probability carries its MCSE); None keeps the fit's.
    With ``cache_dir`` the refits are cached as any fit (:func:`rescuemeta.fit.fit_cached`).

    Returns
    -------
    list of dict
        One per included study of the full fit: ``study_id``, ``probability`` (P(query) without it), ``mcse``,
        ``k``, ``q50``, ``q025``, ``q975``, ``method`` (``psis`` or ``refit``) and ``pareto_k`` (PSIS rows); a
        study whose removal moves the probability across 50% or far from the full fit's is one the conclusion
        depends on.
    """
    from dataclasses import replace

    from .fit import fit, fit_cached, prepare
    from .queries import parse_query, probability

    ids = prepare(table, cfg).study_ids
    key = "rate" if cfg.kind.estimand == "rate" else cfg.effect_measure.lower()
    psis = {}
    if res is not None and _reweightable(res, parse_query(query)):
        psis = _psis_without_each(res, query, key, k_threshold)
    out = []
    n_draws = cfg.draws if draws is None else min(draws, cfg.draws)
    for i, sid in enumerate(ids):
        row, khat = psis.get(i, (None, None))
        if row is not None:
            out.append({"study_id": sid, **row})
            continue
        cfg_i = replace(cfg, exclude_studies=tuple(cfg.exclude_studies) + (sid,), draws=n_draws)
        r = fit(table, cfg_i, sampler) if cache_dir is None else fit_cached(table, cfg_i, cache_dir, sampler)
        p = probability(r, query)
        q025, q50, q975 = r.interval(key)  # (not the whole summary: per-study effects, HDIs, checks)
        out.append({"study_id": sid, "probability": p["probability"], "mcse": p["mcse"], "k": r.k,
                    "q50": q50, "q025": q025, "q975": q975, "method": "refit",
                    "pareto_k": khat})
    return out


def _reweightable(res, q) -> bool:
    """Whether leave-one-out by importance reweighting applies: a sampled binomial fit (independent baselines, no
    moderators) and a query whose value does not depend on the included studies otherwise (RR/RD/NNT use the
    median control risk of the included studies, which changes with the study left out)."""
    return (res.idata is not None and res.exact is None and res.config.kind.binomial
            and res.config.baselines != "hierarchical" and res.data.design is None
            and q.scale in ("OR", "RATE", "TAU") and res.k >= 3)


def _weighted_quantiles(x: np.ndarray, w: np.ndarray, qs) -> list[float]:
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    cw /= cw[-1]
    return [float(x[order][min(int(np.searchsorted(cw, q)), x.size - 1)]) for q in qs]


def _psis_without_each(res, query: str, key: str, k_threshold: float) -> dict:
    """PSIS leave-one-out of P(query) and the pooled effect: {i: (row or None when k-hat is too high, k-hat)}."""
    import arviz as az

    from .queries import _compare, _scale_draws, parse_query

    q = parse_query(query)
    ll = study_loglik(res, res, np.arange(res.k))  # (S, k)
    ind = _compare(_scale_draws(res, q, False, None, 1), q).astype(float).ravel()
    eff = np.asarray(res.draws(key)).ravel()
    chains = res.idata.posterior.sizes["chain"]
    from .summaries import arviz_numpy

    with arviz_numpy():
        ess = float(az.ess(ind.reshape(chains, -1), method="mean")) if np.ptp(ind) > 0 else float(ind.size)
    out: dict = {}
    for i in range(res.k):
        with np.errstate(all="ignore"):
            lw, kh = az.psislw(-ll[:, i])
        kh = float(np.asarray(kh))
        if not (kh <= k_threshold):
            out[i] = (None, kh)
            continue
        w = np.exp(lw - lw.max())
        w /= w.sum()
        p = float(np.sum(w * ind))
        # Monte Carlo SE of the self-normalised estimate, inflated by the draws' autocorrelation
        mcse = float(np.sqrt(np.sum(w**2 * (ind - p) ** 2) * ind.size / max(ess, 1.0)))
        q025, q50, q975 = _weighted_quantiles(eff, w, (0.025, 0.5, 0.975))
        out[i] = ({"probability": p, "mcse": mcse, "k": res.k - 1, "q50": q50, "q025": q025, "q975": q975,
                   "method": "psis", "pareto_k": kh}, kh)
    return out


def _q_stat(y, v):
    """Cochran's Q along the last axis."""
    w = 1 / v
    mu = np.sum(w * y, axis=-1, keepdims=True) / np.sum(w, axis=-1, keepdims=True)
    return np.sum(w * (y - mu) ** 2, axis=-1)


def predictive_checks(res, seed: int = 1) -> dict:
    """Posterior predictive checks of a fit (the idea of bayesmeta's ``pppvalue``).

    * Per study: posterior predictive p-values of the observed counts (or estimate, normal model) against
      replicates from the study's own posterior effect, P(y_rep > y) + P(y_rep = y) / 2 per arm; values near 0
      or 1 mean the model does not reproduce that study.
    * Between-study spread: Cochran's Q of the observed study estimates (log OR with 1/2 added to every cell, logit
      rate likewise, or y) against Q of data replicated with *new* study effects theta_rep ~ N(mu, tau^2) (the
      contrast model keeps each study's baseline): P(Q_rep >= Q_obs). Near 0: the studies disagree more than
      the model's tau allows; near 1: less.

    Returns
    -------
    dict
        ``studies``: ``[{study_id, ppp_treat[, ppp_control]}]`` (normal model: ``ppp``), ``spread``: ``{q_obs,
        ppp, draws}``.
    """
    post = res.idata.posterior
    rng = np.random.default_rng([seed, 31])
    mu, tau = post["mu"].values.ravel(), post["tau"].values.ravel()
    n = mu.size
    kind = res.config.kind
    a = res.data.model_data.arrays
    pp, obs = res.idata.posterior_predictive, res.idata.observed_data

    def ppp(rep, y):
        rep = rep.reshape(-1, rep.shape[-1])
        return (np.mean(rep > y, axis=0) + 0.5 * np.mean(rep == y, axis=0)).tolist()

    studies = [{"study_id": s} for s in res.data.study_ids]
    centre = mu[:, None]
    if res.data.design is not None:  # a meta-regression: each study's new effect centred at mu + x_i' beta
        centre = post["beta"].values.reshape(n, -1) @ np.asarray(res.data.model_data.X, dtype=float).T
    # the bias model (contrast): a new study's observed-scale effect ~ N(centre + m_i, tau^2 + s_i^2)
    bm = np.asarray(a.get("bias_mean", 0.0), dtype=float)
    bv = np.asarray(a.get("bias_var", 0.0), dtype=float)
    theta_rep = centre + bm + np.sqrt(tau[:, None] ** 2 + bv) * rng.standard_normal((n, len(studies)))
    if not kind.binomial:  # normal likelihood on the study estimates
        for s, p in zip(studies, ppp(pp["y"].values, obs["y"].values)):
            s["ppp"] = p
        y, sd = np.asarray(a["y"], dtype=float), np.asarray(a["s"], dtype=float)
        q_obs = float(_q_stat(y, sd**2))
        q_rep = _q_stat(rng.normal(theta_rep, sd), sd**2)
    else:
        from scipy.special import expit

        rep = np.asarray(a.get("est_mask", np.zeros(len(studies))), dtype=float) > 0  # reported log ORs
        for s, p, r in zip(studies, ppp(pp["y_treat"].values, obs["y_treat"].values), rep):
            if not r:
                s["ppp_treat"] = p
        if rep.any():
            for s, p, r in zip(studies, ppp(pp["y_reported"].values, obs["y_reported"].values), rep):
                if r:
                    s["ppp"] = p
        n1, ai = np.asarray(a["n1i"], dtype=float), np.asarray(a["ai"], dtype=float)
        if kind.baseline_prior:
            for s, p, r in zip(studies, ppp(pp["y_control"].values, obs["y_control"].values), rep):
                if not r:
                    s["ppp_control"] = p
            n2, ci = np.asarray(a["n2i"], dtype=float), np.asarray(a["ci"], dtype=float)
            alpha = post["alpha"].values.reshape(n, -1)
            a_rep = rng.binomial(n1.astype(int), expit(alpha + theta_rep))
            c_rep = rng.binomial(n2.astype(int), expit(alpha))

            def log_or(a_, n1_, c_, n2_):
                y_ = np.log((a_ + 0.5) / (n1_ - a_ + 0.5)) - np.log((c_ + 0.5) / (n2_ - c_ + 0.5))
                v_ = 1 / (a_ + 0.5) + 1 / (n1_ - a_ + 0.5) + 1 / (c_ + 0.5) + 1 / (n2_ - c_ + 0.5)
                return y_, v_

            y_obs, v_obs = log_or(ai, n1, ci, n2)
            y_rep, v_rep = log_or(a_rep, n1, c_rep, n2)
            if rep.any():
                se = np.asarray(a["est_s"], dtype=float)
                y_obs, v_obs = np.where(rep, a["est_y"], y_obs), np.where(rep, se**2, v_obs)
                y_rep = np.where(rep, rng.normal(theta_rep, se), y_rep)
                v_rep = np.where(rep, se**2, v_rep)
            q_obs = float(_q_stat(y_obs, v_obs))
            q_rep = _q_stat(y_rep, v_rep)
        else:
            a_rep = rng.binomial(n1.astype(int), expit(theta_rep))

            def logit_rate(a_, n_):
                return np.log((a_ + 0.5) / (n_ - a_ + 0.5)), 1 / (a_ + 0.5) + 1 / (n_ - a_ + 0.5)

            q_obs = float(_q_stat(*logit_rate(ai, n1)))
            q_rep = _q_stat(*logit_rate(a_rep, n1))
    return {"studies": studies, "spread": {"q_obs": q_obs, "ppp": float(np.mean(q_rep >= q_obs)), "draws": int(n)}}


# ---------------------------------------------------------------------------------------------------
# PSIS-LOO with the study's random effect integrated out (proportion model)
# ---------------------------------------------------------------------------------------------------

_HX, _HW = np.polynomial.hermite.hermgauss(64)  # weight exp(-x^2)


def integrated_loglik(a, n, mu, tau) -> np.ndarray:
    """log p(a_i | mu, tau) = log int Bin(a_i | n_i, expit(theta)) N(theta; mu, tau^2) dtheta, per draw and study,
    by adaptive Gauss-Hermite quadrature (64 nodes centred at the integrand's mode, scaled by its curvature: exact
    to 1e-7 or better from tau near 0 to tau >> the binomial's own SD; tested against adaptive quadrature).

    Parameters
    ----------
    a, n : array_like (k,)
    mu : array_like (S,) or (S, k)
        The mean of theta per draw, or per draw and study (a meta-regression's mu + x_i' beta).
    tau : array_like (S,)

    Returns
    -------
    ndarray (S, k)
    """
    from scipy.special import expit, gammaln, log_expit

    a, n = np.asarray(a, dtype=float)[None, :], np.asarray(n, dtype=float)[None, :]
    mu = np.asarray(mu, dtype=float)
    mu = mu.reshape(-1, 1) if mu.ndim <= 1 else mu  # (S,) or, for a meta-regression, per study (S, k)
    tau = np.maximum(np.asarray(tau, dtype=float).reshape(-1, 1), 1e-8)
    prior_prec = 1 / tau**2
    # Newton's method for the mode of log Bin + log N, from the precision-weighted start
    y0 = np.log((a + 0.5) / (n - a + 0.5))
    p0 = (a + 0.5) * (n - a + 0.5) / (n + 1)
    t = (y0 * p0 + mu * prior_prec) / (p0 + prior_prec)
    for _ in range(30):
        p = expit(t)
        grad = a - n * p - (t - mu) * prior_prec
        hess = n * p * (1 - p) + prior_prec
        step = grad / hess
        t = t + step
        if np.max(np.abs(step)) < 1e-12:
            break
    p = expit(t)
    sigma = 1 / np.sqrt(n * p * (1 - p) + prior_prec)
    theta = t[..., None] + np.sqrt(2) * sigma[..., None] * _HX  # (S, k, nodes)
    log_f = (gammaln(n + 1) - gammaln(a + 1) - gammaln(n - a + 1))[..., None] \
        + a[..., None] * log_expit(theta) + (n - a)[..., None] * log_expit(-theta) \
        - 0.5 * ((theta - mu[..., None]) / tau[..., None]) ** 2 - np.log(tau[..., None]) - 0.5 * np.log(2 * np.pi)
    from scipy.special import logsumexp

    return logsumexp(log_f + _HX**2 + np.log(_HW), axis=-1) + np.log(np.sqrt(2) * sigma)


def _log_binom(k, n, logit):
    """log Bin(k | n, expit(logit)), with log(1 - expit(x)) = log expit(x) - x: one log_expit pass, not two."""
    from scipy.special import gammaln, log_expit

    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1) + n * log_expit(logit) - (n - k) * logit


def _lse(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """log sum exp along ``axis`` (the maximum factored out) for finite or -inf entries: scipy's ``logsumexp``
    without its argument handling, which cost as much as the sums on the leave-one-out grids."""
    m = np.max(x, axis=axis, keepdims=True)
    m[~np.isfinite(m)] = 0.0
    with np.errstate(divide="ignore"):
        return np.log(np.sum(np.exp(x - m), axis=axis)) + np.squeeze(m, axis=axis)


_GH_SMALL = np.polynomial.hermite.hermgauss(24)


def conditional_loglik(c, n0, t, n1, loc, tau, baseline_prior, *, span: float = 30.0, window: bool = True) -> np.ndarray:
    """log p(t_i | c_i, mu, tau) for the contrast model: the treatment arm's events given the study's own control
    arm, with both the study's baseline alpha_i (prior ``baseline_prior``, independent across studies) and its
    effect theta_i ~ N(loc, tau^2) integrated out; logit p_control = alpha_i, logit p_treat = alpha_i + theta_i.

    With independent baselines the control arm alone says nothing about (mu, tau), so the study's likelihood for
    them is p(c_i) p(t_i | c_i, mu, tau) with p(c_i) constant: this is the study-level likelihood PSIS-LOO needs,
    and exp of it averaged over the posterior without the study is p(t_i | c_i, y_-i).

    Computed without Monte Carlo error: q(d) = int f(alpha) Bin(t | n1, expit(alpha + d)) dalpha, with f the
    baseline's posterior given the control arm, is tabulated once per study on a fine grid (both integrals by the
    trapezoid rule in log space; it converges geometrically for these smooth integrands), then log int q(d)
    N(d; loc, tau^2) dd per draw by the trapezoid rule (tau at least the grid step) or 24-node Gauss-Hermite on a
    cubic spline of log q (smaller tau), plus the normal mass beyond +-``span`` times q at the grid's end.
    Tested against nested adaptive quadrature to 1e-6.

    Parameters
    ----------
    c, n0, t, n1 : array_like (k,)
        Control events and size, treatment events and size.
    loc : array_like (S,) or (S, k)
    tau : array_like (S,) or (S, k)
        The SD of theta_i per draw (per study: the bias model adds the bias variance).
    baseline_prior : Prior
        The model's prior on alpha_i (``logpdf``, ``ppf``).
    window : bool
        Sum each draw only over the grid points where its integrand is not negligible (below exp(-72) of its
        maximum elsewhere; normal baseline priors). False sums over the whole grid (the reference it is tested
        against).

    Returns
    -------
    ndarray (S, k)
        Log predictive density of each study's treatment-arm count given its control arm, per draw.
    """
    from scipy.interpolate import CubicSpline
    from scipy.special import log_ndtr

    c, n0, t, n1 = (np.atleast_1d(np.asarray(v, dtype=float)) for v in (c, n0, t, n1))
    k = c.size
    tau_all = np.maximum(np.asarray(tau, dtype=float), 1e-10)
    tau_all = np.repeat(tau_all.reshape(-1, 1), k, axis=1) if tau_all.ndim <= 1 else tau_all
    loc = np.asarray(loc, dtype=float)
    loc = np.repeat(loc.reshape(-1, 1), k, axis=1) if loc.ndim <= 1 else loc
    S = tau_all.shape[0]
    out = np.empty((S, k))
    a_lo, a_hi = (float(np.clip(baseline_prior.ppf(q), -80, 80)) for q in (1e-12, 1 - 1e-12))
    for i in range(k):
        h = min(0.02, 0.25 / math.sqrt(max(n0[i], n1[i]) / 4 + 1))
        # the baseline's posterior given the control arm, normalised on its grid (trimmed to 1e-20 of its peak)
        alpha = np.arange(a_lo, a_hi + h, h)
        lf = np.asarray(baseline_prior.logpdf(alpha), dtype=float) + _log_binom(c[i], n0[i], alpha)
        keep = lf > lf.max() - 46
        alpha, lf = alpha[keep], lf[keep]
        lf = lf - _lse(lf) - math.log(h)
        # q(d) on a grid covering every draw's loc +- 9 tau (within +-span)
        li, tau = loc[:, i], tau_all[:, i]
        d_lo = max(-span, float(np.min(li - 9 * tau)) - 5 * h)
        d_hi = min(span, float(np.max(li + 9 * tau)) + 5 * h)
        if d_hi - d_lo < 20 * h:
            mid = (d_lo + d_hi) / 2
            d_lo, d_hi = mid - 10 * h, mid + 10 * h
        d = np.arange(d_lo, d_hi + h, h)
        lq = np.empty(d.size)
        block = max(1, 4_000_000 // alpha.size)
        for j in range(0, d.size, block):
            dd = d[j:j + block, None]
            lq[j:j + block] = _lse(lf[None, :] + _log_binom(t[i], n1[i], alpha[None, :] + dd), axis=1) + math.log(h)
        spline = CubicSpline(d, lq)
        small = tau < h
        res = np.empty(S)
        big = np.nonzero(~small)[0]
        # Each draw's sum needs only the grid points where its integrand q(d) N(d; loc, tau^2) is not negligible.
        # With a log-concave baseline prior (normal) q is log-concave (Prekopa), so the integrand's log is concave
        # with curvature >= 1 / tau^2: its mode lies between loc and the peak of q, and beyond 12 tau from the mode
        # it is below exp(-72) of its maximum. Draws sorted by their window and summed in blocks over the blocks'
        # windows give the full grid's sums to rounding, at a fraction of the cost (issue 19: leave-one-out took
        # 5.5 s of a changed-prior re-run, nearly all of it here).
        if window and getattr(baseline_prior, "family", None) == "normal":
            peak = d[int(np.argmax(lq))]
            j_lo = np.clip(np.floor((np.minimum(li[big], peak) - 12 * tau[big] - d[0]) / h).astype(int), 0, d.size - 1)
            j_hi = np.clip(np.ceil((np.maximum(li[big], peak) + 12 * tau[big] - d[0]) / h).astype(int) + 1, 1, d.size)
            order = np.argsort(j_lo, kind="stable")
            big, j_lo, j_hi = big[order], j_lo[order], j_hi[order]
            sblock = 256
        else:
            j_lo, j_hi = np.zeros(big.size, dtype=int), np.full(big.size, d.size)
            sblock = max(1, 4_000_000 // d.size)
        for j in range(0, big.size, sblock):
            s = big[j:j + sblock]
            a, b = int(j_lo[j:j + sblock].min()), int(j_hi[j:j + sblock].max())
            m, sd = li[s, None], tau[s, None]
            z = (d[None, a:b] - m) / sd
            body = _lse(lq[None, a:b] - 0.5 * z**2 - np.log(sd) - 0.5 * math.log(2 * math.pi), axis=1) + \
                math.log(h)
            left = log_ndtr((d[0] - m[:, 0]) / sd[:, 0]) + lq[0]
            right = log_ndtr((m[:, 0] - d[-1]) / sd[:, 0]) + lq[-1]
            res[s] = np.logaddexp(body, np.logaddexp(left, right))
        if small.any():
            x, w = _GH_SMALL
            nodes = np.clip(li[small, None] + math.sqrt(2) * tau[small, None] * x, d[0], d[-1])
            res[small] = _lse(spline(nodes) + np.log(w / math.sqrt(math.pi)), axis=1)
        out[:, i] = res
    return out


def _study_locations(res, rows) -> np.ndarray:
    """Posterior draws (S, len(rows)) of the mean of theta for the studies whose uncentred design rows are
    ``rows`` (a meta-regression: beta' (x - centre) in this fit's centring), or of mu (no moderators)."""
    post = res.idata.posterior
    mu = post["mu"].values.ravel()
    if res.data.design is None:
        return np.repeat(mu[:, None], len(rows), axis=1)
    beta = post["beta"].values.reshape(mu.size, -1)
    x = np.asarray(rows, dtype=float) - res.data.centre[None, :]
    return beta @ x.T


def study_loglik(ref, r, idx) -> np.ndarray:
    """log p(y_i | mu, tau) per posterior draw of ``r`` (a fit of the same model as ``ref``, whose studies ``idx``
    index), with the study's random effect (and, contrast model, its baseline given its control arm) integrated
    out: the study-level likelihood of :func:`psis_loo`. Shape (draws, len(idx))."""
    from scipy import stats

    kind = ref.config.kind.name
    arr = ref.data.model_data.arrays
    k_all = len(ref.data.study_ids)
    rows = ref.data.design.X if ref.data.design is not None else np.zeros((k_all, 0))
    prior = ref.config.priors()["baseline"] if kind == "contrast" else None
    bm, bv = (np.asarray(arr.get(key, np.zeros(k_all)), dtype=float) for key in ("bias_mean", "bias_var"))
    est = np.asarray(arr.get("est_mask", np.zeros(k_all)), dtype=float) > 0
    loc = _study_locations(r, rows[idx])
    tau = r.idata.posterior["tau"].values.ravel()
    if kind == "proportion":
        return integrated_loglik(arr["ai"][idx], arr["n1i"][idx], loc, tau)
    # the study's observed-scale effect ~ N(loc + m_i, tau^2 + s_i^2) under the bias model (m = s = 0 without)
    loc = loc + bm[idx]
    sd = np.sqrt(tau[:, None] ** 2 + bv[idx])
    out = np.empty(loc.shape)
    c = ~est[idx]
    if c.any():
        j = idx[c]
        out[:, c] = conditional_loglik(arr["ci"][j], arr["n2i"][j], arr["ai"][j], arr["n1i"][j], loc[:, c],
                                       sd[:, c], prior)
    if (~c).any():  # a reported log OR: normal predictive N(loc, sd^2 + se^2), exact
        j = idx[~c]
        out[:, ~c] = stats.norm.logpdf(arr["est_y"][j], loc[:, ~c], np.sqrt(sd[:, ~c] ** 2 + arr["est_s"][j] ** 2))
    return out


def psis_loo(table, res, *, reloo: bool = True, k_threshold: float = 0.7, sampler=None) -> dict:
    """Leave-one-study-out for the binomial models: PSIS-LOO (ArviZ) on the study-level likelihood with the
    study's random effect integrated out (the conditional likelihood given theta_i gives high Pareto k for every
    left-out study), and, as brms's ``reloo``, exact refits without the study for studies with Pareto k-hat above
    ``k_threshold``: elpd_i = log mean_s p(y_i | mu_s, tau_s) over the refit's draws.

    The proportion model predicts the study's events, p(a_i | y_-i) (:func:`integrated_loglik`). The contrast
    model's study baselines are independent, so a left-out study's control arm cannot be predicted; it predicts the
    treatment arm given the study's own control arm, p(t_i | c_i, y_-i) (:func:`conditional_loglik`), the part of
    the study that carries information about the effect. A meta-regression predicts at the study's moderators.

    Returns
    -------
    dict
        ``elpd_loo`` (sum; higher is better), ``se``, ``estimand`` (what elpd_i is the log density of) and
        ``studies``: ``[{study_id, elpd, pareto_k, refit}]``; k-hat above 0.7 means the PSIS estimate for that
        study is unreliable (refitted when ``reloo``).
    """
    from dataclasses import replace

    import arviz as az
    from scipy.special import logsumexp

    from .fit import fit

    kind = res.config.kind.name
    if kind not in ("proportion", "contrast"):
        raise NotEstimable(f"PSIS-LOO is implemented for the proportion and contrast models; the {kind} model has "
                           "the exact `loo` (by quadrature)")
    if kind == "contrast" and res.config.baselines == "hierarchical":
        raise NotEstimable("leave-one-study-out for the contrast model is implemented with independent study "
                           "baselines (the default); with hierarchical baselines the study's baseline prior depends "
                           "on the posterior and needs a 2-D integral per draw, not implemented")
    arr = res.data.model_data.arrays
    est = np.asarray(arr.get("est_mask", np.zeros(len(res.data.study_ids))), dtype=float) > 0

    def loglik(r, idx):
        return study_loglik(res, r, idx)

    post = res.idata.posterior
    shape = post["mu"].shape
    ll = loglik(res, np.arange(len(res.data.study_ids))).reshape(*shape, -1)
    idata = az.from_dict(posterior={"mu": post["mu"].values}, log_likelihood={"y": ll})
    with np.errstate(all="ignore"):
        loo = az.loo(idata, pointwise=True)
    elpd = np.asarray(loo.loo_i).copy()
    khat = np.asarray(loo.pareto_k).copy()
    refit = np.zeros(len(elpd), dtype=bool)
    if reloo:
        for i in np.nonzero(khat > k_threshold)[0]:
            sid = res.data.study_ids[i]
            r = fit(table, replace(res.config, exclude_studies=tuple(res.config.exclude_studies) + (sid,)), sampler)
            if r.data.design is not None and r.data.design.names != res.data.design.names:
                raise NotEstimable(f"without study {sid} the design loses a column "
                                   f"({', '.join(sorted(set(res.data.design.names) - set(r.data.design.names)))}): "
                                   "its effect cannot be predicted from the others")
            li = loglik(r, np.array([i]))[:, 0]
            elpd[i] = float(logsumexp(li) - np.log(li.size))
            refit[i] = True
    se = float(np.sqrt(len(elpd) * np.var(elpd)))
    estimand = ("log p(a_i | y_-i): the study's events given the other studies" if kind == "proportion" else
                "log p(t_i | c_i, y_-i): the study's treatment-arm events given its control arm and the other studies"
                + ("; for a row analysed by its reported log OR, log p(y_i | y_-i) of that estimate" if est.any()
                   else ""))
    return {"elpd_loo": float(elpd.sum()), "se": se, "estimand": estimand,
            "studies": [{"study_id": s, "elpd": float(e), "pareto_k": float(kk), "refit": bool(rf)}
                        for s, e, kk, rf in zip(res.data.study_ids, elpd, khat, refit)]}
