"""The model-averaging stage: evidence for an effect and for heterogeneity, and P(benefit) averaged over models.

With few studies, whether to assume heterogeneity changes the answer, and a posterior probability of benefit does
not say how strongly the data favour an effect over none. Following metaBMA (Gronau et al. 2021) and RoBMA, the
normal-normal model is fitted as four models, {fixed (tau = 0), random} x {no effect (mu = 0), effect}, each
with the fitted priors on mu and tau, and their marginal likelihoods (exact, by quadrature over tau:
:meth:`rescuemeta.exact.NormalNormalPosterior.log_evidence` and siblings) give posterior model probabilities,
inclusion Bayes factors and the model-averaged posterior of mu.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from scipy import stats
from scipy.optimize import brentq

from .errors import InputError

__all__ = ["MODELS", "average", "bf_words", "model_probabilities"]

MODELS = ("fixed_null", "fixed", "random_null", "random")
LABELS = {"fixed_null": "fixed effect, no effect (tau = 0, mu = 0)", "fixed": "fixed effect (tau = 0)",
          "random_null": "random effects, no effect (mu = 0)", "random": "random effects"}


def bf_words(bf10: float) -> str:
    """A verbal label for a Bayes factor (Lee & Wagenmakers 2013, after Jeffreys 1961): anecdotal (1-3),
    moderate (3-10), strong (10-30), very strong (30-100), extreme (> 100) evidence for H1, mirrored for H0."""
    if not (bf10 > 0 and math.isfinite(bf10)):
        return "undefined"
    b = bf10 if bf10 >= 1 else 1 / bf10
    word = ("anecdotal" if b < 3 else "moderate" if b < 10 else "strong" if b < 30 else "very strong" if b < 100
            else "extreme")
    return f"{word} evidence {'for' if bf10 >= 1 else 'against'}"


def model_probabilities(log_evidence: dict[str, float], prior: dict[str, float]) -> dict:
    """Posterior model probabilities from log marginal likelihoods and prior model probabilities, and the
    inclusion Bayes factors for the effect (models with mu free against mu = 0) and for heterogeneity (random
    against fixed): posterior inclusion odds / prior inclusion odds.

    Returns
    -------
    dict
        ``posterior`` {model: probability}, ``bf_inclusion_effect``, ``bf_inclusion_heterogeneity`` (> 1: the
        data favour the effect / heterogeneity).
    """
    names = [m for m in MODELS if prior.get(m, 0) > 0]
    lw = np.array([math.log(prior[m]) + log_evidence[m] for m in names])
    w = np.exp(lw - lw.max())
    post = dict(zip(names, (w / w.sum()).tolist()))
    for m in MODELS:
        post.setdefault(m, 0.0)

    def incl(yes, no):
        num, den = sum(post[m] for m in yes), sum(post[m] for m in no)
        pn, pd = sum(prior.get(m, 0) for m in yes), sum(prior.get(m, 0) for m in no)
        if pn == 0 or pd == 0:
            return None
        return (num / den) / (pn / pd) if den > 0 else math.inf

    return {"posterior": post, "bf_inclusion_effect": incl(("fixed", "random"), ("fixed_null", "random_null")),
            "bf_inclusion_heterogeneity": incl(("random", "random_null"), ("fixed", "fixed_null"))}


def average(table, cfg, prior: dict[str, float] | None = None, query: str | None = None) -> dict:
    """Average over {fixed, random} x {no effect, effect}: the normal model exactly, the contrast model by bridge
    sampling.

    Parameters
    ----------
    table, cfg
        The study table and a :class:`rescuemeta.fit.FitConfig` of the ``normal`` (exact evidences, quadrature) or
        ``contrast`` model (evidences by bridge sampling, :mod:`rescuemeta.evidence`: four fits on one compiled
        graph); its priors on mu and tau are the effect and random models' priors.
    prior : dict, optional
        Prior model probabilities over :data:`MODELS` (default 1/4 each); need not sum to 1 (normalised).
    query : str, optional
        E.g. ``"OR < 1"`` (default: benefit in the outcome's declared direction).

    Returns
    -------
    dict
        ``models``: per model its ``log_evidence`` (and ``log_evidence_se`` when estimated), prior and posterior
        probability and ``probability`` of the query; ``bf_inclusion_effect`` and ``bf_inclusion_heterogeneity``
        with verbal labels; ``averaged``: the model-averaged P(query), quantiles of mu and of the ratio (q025, q50,
        q975; the no-effect models put mass exactly at mu = 0) and ``p_mu_zero`` (that mass); ``random_effects``:
        P(query) of the random-effects model alone, for comparison; ``method``.
    """
    from .fit import fit
    from .pipeline import mirror_query
    from .queries import parse_query

    if cfg.model not in AVERAGED:
        raise InputError(f"model averaging is implemented for the {' and '.join(AVERAGED)} models, not {cfg.model} "
                         "(mu = 0 must be a ratio of 1)")
    if cfg.mods:
        raise InputError("model averaging of a meta-regression is not implemented")
    res = fit(table, replace(cfg, method="auto"))
    meas = cfg.effect_measure
    if query is None:
        base = f"{meas} < 1"
        query = mirror_query(base) if table.description.better(cfg.outcome) == "higher" else base
    q = parse_query(query)
    if q.scale != meas:
        raise InputError(f"the averaged query must be on the model's scale ({meas}), not {query!r}")
    prior = {m: 0.25 for m in MODELS} if prior is None else dict(prior)
    bad = [m for m in prior if m not in MODELS]
    if bad or any(not (v >= 0) for v in prior.values()) or sum(prior.values()) <= 0:
        raise InputError(f"prior model probabilities must be >= 0 over {', '.join(MODELS)}, not all 0")
    total = sum(prior.values())
    prior = {m: prior.get(m, 0.0) / total for m in MODELS}
    comp = AVERAGED[cfg.model](res)
    logev, cdfs = comp["log_evidence"], comp["cdf"]
    mp = model_probabilities(logev, prior)
    post = mp["posterior"]
    t = math.log(q.value)
    below = q.op in ("<", "<=")

    def p_query(m):
        if m in ("fixed_null", "random_null"):  # mu = 0 exactly: OR = 1
            return float((0.0 < t) if q.op == "<" else (0.0 <= t) if q.op == "<=" else (0.0 > t) if q.op == ">"
                         else (0.0 >= t))
        c = cdfs[m](t)
        return c if below else 1 - c

    models = {m: {"label": LABELS[m], "log_evidence": logev[m], "prior": prior[m], "posterior": post[m],
                  "probability": p_query(m)} for m in MODELS}
    for m, se in comp.get("se", {}).items():
        models[m]["log_evidence_se"] = se
    p_zero = post["fixed_null"] + post["random_null"]

    def mix_cdf(x):
        return (post["fixed"] * cdfs["fixed"](x) + post["random"] * cdfs["random"](x)
                + (p_zero if x >= 0 else 0.0))

    def quantile(p):
        lo, hi = -20.0, 20.0
        if p_zero > 0:
            below0 = mix_cdf(-1e-12)
            if below0 < p <= mix_cdf(0.0):
                return 0.0
        return float(brentq(lambda x: mix_cdf(x) - p, lo, hi, xtol=1e-10))

    qs = {f"q{int(round(1000 * p)):03d}": quantile(p) for p in (0.025, 0.5, 0.975)}
    averaged = {"probability": float(sum(post[m] * models[m]["probability"] for m in MODELS)),
                "mu": qs, meas.lower(): {k: math.exp(v) for k, v in qs.items()}, "p_mu_zero": p_zero}
    be, bh = mp["bf_inclusion_effect"], mp["bf_inclusion_heterogeneity"]
    out = {"outcome": cfg.outcome, "model": cfg.model, "measure": meas, "query": query,
           "priors": {"tau": res.prior_record()["tau"], "effect": res.prior_record()["effect"]},
           "models": models,
           "bf_inclusion_effect": be, "effect_words": None if be is None else bf_words(be),
           "bf_inclusion_heterogeneity": bh, "heterogeneity_words": None if bh is None else bf_words(bh),
           "averaged": averaged, "random_effects": {"probability": models["random"]["probability"]},
           "inclusion": {**res.data.selection.describe(), "included": res.data.study_ids},
           "method": comp["method"]}
    if comp.get("warnings"):
        out["warnings"] = comp["warnings"]
    return out


def _exact_components(res) -> dict:
    """Evidences and CDFs of mu of the four normal models (exact: quadrature over tau, conjugate fixed effect)."""
    ex = res.exact
    assert ex is not None  # the normal model without moderators is exact
    logev = {"fixed_null": ex.log_evidence_fixed_null(), "fixed": ex.log_evidence_fixed(),
             "random_null": ex.log_evidence_null(), "random": ex.log_evidence()}
    m0, s0 = ex.mu_mean, ex.mu_sd
    prec = 1 / s0**2 + np.sum(1 / ex.s**2)
    fm, fsd = (m0 / s0**2 + np.sum(ex.y / ex.s**2)) / prec, 1 / math.sqrt(prec)
    cdfs = {"fixed": lambda x: float(stats.norm.cdf(x, fm, fsd)), "random": lambda x: float(ex.mu_cdf(x))}
    return {"log_evidence": logev, "cdf": cdfs, "method": "exact (quadrature over tau)"}


def _bridge_components(res) -> dict:
    """Evidences of the four contrast models by bridge sampling (:func:`rescuemeta.evidence.model_evidences`) and
    the empirical CDFs of mu from the fixed and random fits."""
    from .evidence import convergence_warnings, model_evidences

    ev = model_evidences(res.data, res.config, res.config.priors())

    def ecdf(draws):
        d = np.sort(np.asarray(draws, dtype=float))
        return lambda x: float(np.searchsorted(d, x, side="right") / d.size)

    return {"log_evidence": {n: e.result.log_ml for n, e in ev.items()},
            "se": {n: e.result.cv for n, e in ev.items()},
            "cdf": {"fixed": ecdf(ev["fixed"].mu), "random": ecdf(ev["random"].mu)},
            "method": "bridge sampling (normal proposal); mu quantiles from the fits' draws",
            "warnings": convergence_warnings(ev)}


AVERAGED = {"normal": _exact_components, "contrast": _bridge_components}
