"""The bias stage: non-randomised evidence handled as such.

A non-randomised comparison estimates the treatment effect plus a bias (confounding by indication, selection).
The bias model (Turner et al. 2009, JRSS-A 172:21-47; Verde 2021, Stat Med 40:2617) adds to every non-randomised
row's log ratio an additive bias delta_i ~ N(m, s^2): y_i = theta_i + delta_i + e_i. For the normal model this is
exact and cheap: the row's estimate is shifted by -m and its variance increased by s^2
(:attr:`rescuemeta.fit.FitConfig.bias_prior`), and the posterior is computed by quadrature as before.

* :func:`load_bias_priors` / :func:`resolve_bias_prior`: named priors (``models/bias_priors.toml``: a ratio of
  odds ratios by which non-randomised studies exaggerate benefit, with its source's sentence), turned into
  ``normal(m, s)`` on an outcome's log scale, signed by the outcome's direction of benefit;
* :func:`tipping_point`: the bias mean m (SD fixed) at which a posterior probability falls to a threshold: how
  much confounding would overturn the conclusion;
* :func:`design_models`: ``pooled`` (design ignored), ``bias`` (the bias prior on non-randomised rows) and
  ``stratified`` (randomised and non-randomised rows fitted apart, and their difference).
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["NamedBiasPrior", "DEFAULT_BIAS_PRIORS", "find_bias_priors", "load_bias_priors", "resolve_bias_prior",
           "bias_probability", "exact_bias_function", "is_fast", "tipping_point", "design_models", "bias_curve"]

DEFAULT_BIAS_PRIORS = Path("models/bias_priors.toml")
TIPPING_BOUND = 3.0  # search the bias mean within +-3 on the log scale (a ratio of ratios of 20)


@dataclass(frozen=True)
class NamedBiasPrior:
    """A named bias prior: non-randomised studies exaggerate benefit by the ratio of odds ratios ``ror``, with SD
    ``sd`` on the log scale."""

    name: str
    ror: float
    sd: float
    source: str = ""
    quote: str = ""
    url: str = ""

    def spec(self, better: str | None) -> str:
        """``normal(m, s)`` on the outcome's log ratio: the bias that makes the treatment look better, i.e.
        m = -log(ror) when fewer events are better, +log(ror) when more are."""
        m = math.log(self.ror) * (1.0 if better == "higher" else -1.0)
        return f"normal({m:.6g}, {self.sd:g})"


def find_bias_priors(spec_path: str | Path | None = None) -> Path | None:
    """Where the named bias priors are: ``bias_priors.toml`` beside the analysis spec, else
    ``models/bias_priors.toml`` (from the working directory), else None."""
    if spec_path is not None:
        beside = Path(spec_path).parent / "bias_priors.toml"
        if beside.exists():
            return beside
    return DEFAULT_BIAS_PRIORS if DEFAULT_BIAS_PRIORS.exists() else None


def load_bias_priors(path: str | Path | None = None) -> dict[str, NamedBiasPrior]:
    """The named bias priors of ``path`` (default: :func:`find_bias_priors`; none when there is no file).

    Raises InputError naming the file and entry for a malformed one."""
    p = Path(path) if path is not None else find_bias_priors()
    if p is None:
        return {}
    if not p.exists():
        raise InputError("no such file", file=p)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"not valid TOML ({e})", file=p) from None
    out = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            raise InputError(f"entry {name!r} must be a table [name] with ror and sd", file=p)
        unknown = set(entry) - {"ror", "sd", "source", "quote", "url"}
        if unknown:
            raise InputError(f"entry {name!r}: unknown key(s) {', '.join(sorted(unknown))}", file=p)
        try:
            ror, sd = float(entry["ror"]), float(entry["sd"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"entry {name!r} needs numbers ror and sd", file=p) from None
        if not (ror > 0 and math.isfinite(ror) and sd > 0 and math.isfinite(sd)):
            raise InputError(f"entry {name!r}: ror and sd must be positive and finite", file=p)
        out[name] = NamedBiasPrior(name, ror, sd, str(entry.get("source", "")), str(entry.get("quote", "")),
                                   str(entry.get("url", "")))
    return out


def resolve_bias_prior(spec: str, better: str | None, path: str | Path | None = None) -> str:
    """``spec`` as ``normal(m, s)``: a named prior of :func:`load_bias_priors` signed by the outcome's direction
    (``better``: "higher" or "lower"), or the user's own ``normal(m, s)`` unchanged (checked)."""
    from .priors import parse_bias_prior

    named = load_bias_priors(path)
    if spec in named:
        return named[spec].spec(better)
    if "(" not in spec:
        raise InputError(f"--bias-prior {spec!r}: not normal(m, s) and not a named prior"
                         + (f" ({', '.join(named)})" if named else ""))
    parse_bias_prior(spec)
    return spec


def bias_probability(table, cfg, query: str, bias_mean: float, bias_sd: float) -> float:
    """P(query) under the bias prior N(bias_mean, bias_sd^2) on every non-randomised row (normal model, exact)."""
    from .fit import fit
    from .queries import probability

    return float(probability(fit(table, replace(cfg, bias_prior=f"normal({float(bias_mean)!r}, {float(bias_sd)!r})")),
                             query)["probability"])


def exact_bias_function(table, cfg, query: str, bias_sd: float):
    """m -> P(query) under bias N(m, bias_sd^2), for the normal model without moderators: the data are prepared
    once and each m builds the exact posterior directly (as :func:`bias_probability`, without a fit's overhead)."""
    from .exact import NormalNormalPosterior
    from .fit import prepare
    from .queries import parse_query

    q = parse_query(query)
    prep = prepare(table, replace(cfg, bias_prior=""))
    rnd = dict(zip(prep.selection.study_ids, prep.selection.randomised))
    biased = np.array([not rnd[s] for s in prep.study_ids])
    y, s = prep.model_data.arrays["y"], prep.model_data.arrays["s"]
    p = cfg.priors()
    s_b = np.where(biased, np.sqrt(s**2 + bias_sd**2), s)
    t = math.log(q.value)

    def prob(m: float) -> float:
        ex = NormalNormalPosterior(np.where(biased, y - m, y), s_b, p["tau"], *p["effect"].params)
        c = float(ex.mu_cdf(t))
        return c if q.op in ("<", "<=") else 1 - c
    return prob


def bias_curve(table, cfg, query: str, bias_sd: float = 0.1, means=None) -> list[dict]:
    """P(query) against the bias mean m (SD ``bias_sd``), for a figure: ``[{bias_mean, probability}]``."""
    means = np.linspace(-1.5, 1.5, 31) if means is None else np.asarray(means, dtype=float)
    f = (exact_bias_function(table, cfg, query, bias_sd) if is_fast(cfg) else
         (lambda m: bias_probability(table, cfg, query, m, bias_sd)))
    return [{"bias_mean": float(m), "probability": f(float(m))} for m in means]


def is_fast(cfg) -> bool:
    """The exact shortcut applies: normal model, exact method, normal effect prior, no moderators."""
    from .priors import parse

    return (cfg.model == "normal" and cfg.method != "nuts" and not cfg.mods
            and parse(cfg.effect_prior, "effect").family == "normal")


def tipping_point(table, cfg, query: str, threshold: float = 0.95, bias_sd: float = 0.1, *,
                  bound: float = TIPPING_BOUND, xtol: float = 1e-8) -> dict:
    """The bias mean at which the posterior probability of ``query`` falls to ``threshold``.

    Every non-randomised row's log ratio is given the bias N(m, ``bias_sd``^2); the probability is a monotone
    function of m. Normal model: exact posterior, and the crossing of ``threshold`` nearest to m = 0 is found by
    Brent's method within +-``bound``. Contrast model (NUTS): the posterior at one bias mean is importance-
    reweighted to others (Pareto-smoothed; the weights are the ratio of the study effects' bias densities), the
    crossing is found on the reweighted probability, and the model is refitted there, repeating from the refit
    until the refit's probability is within max(0.005, 3 MCSE) of the threshold (at most 4 refits).

    Returns
    -------
    dict
        ``bias_mean`` (m on the analysis scale; None when the probability does not cross the threshold within
        +-bound), ``ratio_of_ratios`` exp(|m|), ``favours`` (whether that bias made the treatment look better
        or worse than it is), ``query``, ``threshold``, ``bias_sd``, ``probability_without_bias`` (no bias
        model), ``probability_at_zero`` (bias mean 0, SD bias_sd) and ``note``. Read: if non-randomised studies
        overstated the effect by this ratio on average, P(query) would be exactly ``threshold``.
    """
    from scipy.optimize import brentq

    from .fit import fit
    from .queries import parse_query, probability

    if cfg.model not in ("normal", "contrast"):
        raise InputError(f"the tipping point is implemented for the normal and contrast models, not {cfg.model}")
    if not 0 < threshold < 1:
        raise InputError(f"--threshold must be strictly between 0 and 1, got {threshold}")
    if not bias_sd >= 0:
        raise InputError(f"--bias-sd must be >= 0, got {bias_sd}")
    q = parse_query(query)
    if q.scale not in ("OR", "RR") or q.scale != cfg.effect_measure:
        raise InputError(f"the tipping point takes a query on the model's scale ({cfg.effect_measure}), not {query!r}")
    if cfg.model == "contrast" or cfg.method == "nuts":
        return _tipping_reweighted(table, cfg, query, threshold, bias_sd, bound)
    base = fit(table, replace(cfg, bias_prior=""))
    p_none = float(probability(base, query)["probability"])
    sd = max(bias_sd, 1e-12)

    prob = (exact_bias_function(table, cfg, query, sd) if is_fast(cfg) else
            (lambda m: bias_probability(table, cfg, query, m, sd)))

    def f(m):
        return prob(m) - threshold

    f0 = f(0.0)
    # which way m must move to lower P(query): a bias that made the treatment look better, removed, lowers it
    lower_with_m = q.op in ("<", "<=")  # P(ratio < t) falls as the estimates are shifted up (-m with m < 0)
    out: dict[str, Any] = {"query": query, "threshold": threshold, "bias_sd": bias_sd,
                           "probability_without_bias": p_none, "probability_at_zero": f0 + threshold}
    grid = np.linspace(0.0, bound, 31)[1:]
    direction = -1.0 if lower_with_m else 1.0
    if f0 < 0:  # already below the threshold: the bias that would RAISE the probability to it
        direction = -direction
    prev, m_found = 0.0, None
    for g in grid:
        m = direction * g
        if (f(m) < 0) != (f0 < 0):
            m_found = brentq(f, min(prev, m), max(prev, m), xtol=xtol)
            break
        prev = m
    out["bias_mean"] = None if m_found is None else float(m_found)
    out["ratio_of_ratios"] = None if m_found is None else float(math.exp(abs(m_found)))
    if m_found is None:
        out["favours"] = None
        out["note"] = (f"P({query}) does not reach {threshold} for any bias mean within +-{bound} on the log scale "
                       f"(a ratio of ratios of {math.exp(bound):.0f})")
        return out
    # observed = true + bias: a bias m shifts the observed log ratio by m; below 0 it makes the ratio look smaller
    smaller = m_found < 0
    out["favours"] = "smaller ratios" if smaller else "larger ratios"
    moves = "falls" if f0 >= 0 else "rises"
    out["note"] = (f"P({query}) {moves} to {threshold} if the non-randomised studies' {cfg.measure}s were "
                   f"{'biased downwards' if smaller else 'biased upwards'} by a factor of {math.exp(abs(m_found)):.3g} "
                   f"on average (bias SD {bias_sd:g})")
    return out


def _tipping_reweighted(table, cfg, query: str, threshold: float, bias_sd: float, bound: float) -> dict:
    import arviz as az
    from scipy import stats
    from scipy.optimize import brentq

    from .fit import fit
    from .queries import parse_query, probability

    if cfg.mods:
        raise InputError("the tipping point of a meta-regression is not implemented")
    q = parse_query(query)
    t = math.log(q.value)
    below = q.op in ("<", "<=")
    sd = max(bias_sd, 1e-6)
    p_none = float(probability(fit(table, replace(cfg, bias_prior="")), query)["probability"])

    def fit_at(m):
        return fit(table, replace(cfg, bias_prior=f"normal({float(m)!r}, {float(sd)!r})"))

    def reweighter(r, m_from):
        post = r.idata.posterior
        mu, tau = post["mu"].values.ravel(), post["tau"].values.ravel()
        theta = post["theta"].values.reshape(mu.size, -1)
        biased = np.asarray(r.data.model_data.arrays["bias_var"]) > 0
        v = np.sqrt(tau[:, None] ** 2 + sd**2)
        ind = (mu < t) if below else (mu > t)

        def p(m):
            lw = np.sum(stats.norm.logpdf(theta[:, biased], mu[:, None] + m, v)
                        - stats.norm.logpdf(theta[:, biased], mu[:, None] + m_from, v), axis=1)
            slw, khat = az.psislw(lw - lw.max())
            w = np.exp(slw - slw.max())
            return float(np.sum(w * ind) / np.sum(w)), float(khat)
        return p

    m_cur, r = 0.0, fit_at(0.0)
    p0 = float(probability(r, query)["probability"])
    out: dict[str, Any] = {"query": query, "threshold": threshold, "bias_sd": bias_sd,
                           "probability_without_bias": p_none, "probability_at_zero": p0,
                           "method": "importance reweighting, then refits", "refits": []}
    m_found = None
    for _ in range(4):
        p_rw = reweighter(r, m_cur)
        p_here = float(probability(r, query)["probability"])
        direction = (-1.0 if below else 1.0) * (1.0 if p_here >= threshold else -1.0)
        prev, lo_hi = m_cur, None
        for g in np.linspace(0.0, bound, 61)[1:]:
            m = m_cur + direction * g
            if abs(m) > bound:
                break
            if (p_rw(m)[0] < threshold) != (p_here < threshold):
                lo_hi = (min(prev, m), max(prev, m))
                break
            prev = m
        if lo_hi is None:
            break
        m_new = brentq(lambda x, f=p_rw: f(x)[0] - threshold, *lo_hi, xtol=1e-6)
        khat = p_rw(m_new)[1]
        r = fit_at(m_new)
        pr = probability(r, query)
        out["refits"].append({"bias_mean": float(m_new), "probability": float(pr["probability"]),
                              "mcse": float(pr["mcse"]), "pareto_k": khat})
        m_cur, m_found = m_new, m_new
        if abs(pr["probability"] - threshold) <= max(0.005, 3 * pr["mcse"]):
            break
    out["bias_mean"] = None if m_found is None else float(m_found)
    out["ratio_of_ratios"] = None if m_found is None else float(math.exp(abs(m_found)))
    if m_found is None:
        out["favours"] = None
        out["note"] = (f"P({query}) does not reach {threshold} for any bias mean within +-{bound} on the log scale")
        return out
    smaller = m_found < 0
    out["favours"] = "smaller ratios" if smaller else "larger ratios"
    moves = "falls" if p0 >= threshold else "rises"
    out["note"] = (f"P({query}) {moves} to {threshold} (refit: {out['refits'][-1]['probability']:.3f}) if the "
                   f"non-randomised studies' ORs were {'biased downwards' if smaller else 'biased upwards'} by a factor "
                   f"of {math.exp(abs(m_found)):.3g} on average (bias SD {bias_sd:g})")
    return out


def design_models(table, cfg, bias_prior: str | None = None) -> dict:
    """The same outcome under three treatments of study design (normal model: exact; contrast: NUTS).

    Returns
    -------
    dict
        ``pooled`` (design ignored), ``bias`` (``bias_prior`` on non-randomised rows; None without one),
        ``stratified``: ``{randomised, non_randomised, difference}`` (each fitted on its own rows; the
        difference of the pooled log ratios, non-randomised minus randomised, by Monte Carlo over exact
        posterior draws; None where a stratum has no rows). Each fit as its ``summary()``.
    """
    from .data import select
    from .fit import fit

    out: dict = {"pooled": fit(table, replace(cfg, bias_prior="")).summary()}
    out["bias"] = fit(table, replace(cfg, bias_prior=bias_prior)).summary() if bias_prior else None
    sel = select(table, cfg.outcome, arms="two", all_studies=cfg.all_studies, exclude_basis=tuple(cfg.exclude_basis),
                 effects=cfg.effects, measure=cfg.measure if cfg.effects == "reported" else None)
    rnd = dict(zip(sel.study_ids, sel.randomised))
    fits: dict[str, Any] = {}
    for name, keep in (("randomised", True), ("non_randomised", False)):
        leave = tuple(s for s, r in rnd.items() if r != keep)
        if len(leave) == len(rnd):
            fits[name] = None
            continue
        fits[name] = fit(table, replace(cfg, bias_prior="", exclude_studies=tuple(cfg.exclude_studies) + leave))
    strat: dict = {k: (None if v is None else v.summary()) for k, v in fits.items()}
    if fits["randomised"] is not None and fits["non_randomised"] is not None:
        from .summaries import summarize

        d = fits["non_randomised"].draws("mu").ravel() - fits["randomised"].draws("mu").ravel()
        strat["difference"] = {**summarize(d), "ratio_of_ratios_q50": float(np.exp(np.median(d)))}
    else:
        strat["difference"] = None
        strat["note"] = "the data hold only " + ("randomised" if fits["non_randomised"] is None else
                                                  "non-randomised") + " rows: no stratified comparison"
    out["stratified"] = strat
    return out

