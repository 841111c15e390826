"""The queries stage: probability statements about a fitted model, such as P(RR < 0.8) or P(NNT < 10),
for the pooled effect or for the effect in a new study, at the fit's stated control-arm risk or a risk the user
gives.

Grammar: ``SCALE OP VALUE`` with

=========  ===========================================================================================
``OR``     odds ratio (treatment vs control)
``RR``     risk ratio at the baseline risk
``RD``     risk difference, treatment minus control, at the baseline risk (``-0.05`` or ``-5%``)
``NNT``    number needed to treat for one patient to *benefit*: ``1 / benefit``, where benefit = RD for an
           outcome where more events are better and -RD otherwise (which direction is benefit comes from the
           data's description, ``better = "higher"`` or ``"lower"``, or ``direction``; fewer events are better
           when nothing says); draws without benefit have NNT = +inf (treatment never reaches one benefit), so
           ``P(NNT < 10)`` = P(benefit > 0.1)
``NNH``    number needed to harm: the same with harm = -benefit
``tau``    between-study SD (model scale)
``rate``   pooled event rate (proportion model)
``coef[NAME]``  a meta-regression coefficient on the model scale (log ratio or logit), e.g.
           ``coef[circulation[posterior]] < 0``: the posterior level's effect is below the reference level's
``diff(A, B)``  the effect at level A minus the effect at level B of the fit's subgroup (or only text)
           moderator, on the model scale: ``diff(posterior, anterior) < 0`` = P(the ratio is smaller in A)
=========  ===========================================================================================

``OP`` is ``<``, ``<=``, ``>`` or ``>=`` (for continuous posteriors ``<`` and ``<=`` give the same number).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
from scipy.special import logit

from .errors import InputError

__all__ = ["SCALES", "GRAMMAR", "Query", "parse_query", "benefit_sign", "probability"]

SCALES = ("OR", "RR", "RD", "NNT", "NNH", "TAU", "RATE")
GRAMMAR = ("SCALE OP VALUE, e.g. 'RR < 0.8', 'OR > 1.5', 'RD < -0.05' (or -5%), 'NNT < 10', 'tau > 0.5', "
           "'rate > 0.4', 'coef[year] > 0', 'diff(posterior, anterior) < 0'; SCALE one of OR, RR, RD, NNT, NNH, tau, "
           "rate, coef[NAME], diff(A, B); OP one of <, <=, >, >=")
_COEF_RE = re.compile(r"^\s*coef\s*\[(.+)\]\s*(<=|>=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$", re.I)
_DIFF_RE = re.compile(r"^\s*diff\s*\(\s*([^,()]+?)\s*,\s*([^,()]+?)\s*\)\s*(<=|>=|<|>)\s*"
                      r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$", re.I)
_RE = re.compile(r"^\s*([A-Za-z]+)\s*(<=|>=|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(%?)\s*$")


@dataclass(frozen=True)
class Query:
    """A parsed query. ``value`` is on the natural scale (percent already divided by 100)."""

    text: str
    scale: str
    op: str
    value: float
    args: tuple[str, ...] = ()  # COEF: (name,); DIFF: (level A, level B)

    @property
    def below(self) -> bool:
        return self.op in ("<", "<=")


def parse_query(text: str) -> Query:
    """Parse ``"RR < 0.8"``; an :class:`InputError` listing the grammar for anything else."""
    m = _COEF_RE.match(text or "")
    if m:
        return Query(text.strip(), "COEF", m.group(2), float(m.group(3)), (m.group(1).strip(),))
    m = _DIFF_RE.match(text or "")
    if m:
        return Query(text.strip(), "DIFF", m.group(3), float(m.group(4)), (m.group(1), m.group(2)))
    m = _RE.match(text or "")
    if not m:
        raise InputError(f"query {text!r} is not understood; accepted: {GRAMMAR}")
    scale, op, num, pct = m.group(1).upper(), m.group(2), float(m.group(3)), m.group(4)
    if scale not in SCALES:
        raise InputError(f"query {text!r}: unknown scale {m.group(1)!r}; accepted: {GRAMMAR}")
    if pct:
        if scale not in ("RD", "RATE"):
            raise InputError(f"query {text!r}: '%' is allowed for RD and rate only")
        num /= 100
    if scale in ("OR", "RR", "NNT", "NNH") and num <= 0:
        raise InputError(f"query {text!r}: {scale} is positive; compare it with a value > 0")
    if scale == "TAU" and num < 0:
        raise InputError(f"query {text!r}: tau is >= 0")
    if scale == "RATE" and not 0 <= num <= 1:
        raise InputError(f"query {text!r}: a rate is between 0 and 1 (or 0% and 100%)")
    if scale == "RD" and not -1 <= num <= 1:
        raise InputError(f"query {text!r}: a risk difference is between -1 and 1")
    return Query(text.strip(), scale, op, num)


def benefit_sign(outcome: str, direction: str | None = None, description=None) -> int:
    """+1 when more events are better (``direction="higher"``), -1 when fewer are (``"lower"``); by default
    from the data's description (:class:`rescuemeta.description.Description`), and -1 when it does not say."""
    if direction is None:
        return description.benefit_sign(outcome) if description is not None else -1
    if direction not in ("higher", "lower"):
        raise InputError(f"--direction must be 'higher' or 'lower' (is a higher event rate better?), not {direction!r}")
    return 1 if direction == "higher" else -1


def _compare(x: np.ndarray, q: Query) -> np.ndarray:
    return {"<": x < q.value, "<=": x <= q.value, ">": x > q.value, ">=": x >= q.value}[q.op]


def _nnt(rd: np.ndarray, sign: int) -> np.ndarray:
    b = sign * np.asarray(rd, dtype=float)
    with np.errstate(divide="ignore"):
        return np.where(b > 0, 1.0 / np.where(b > 0, b, 1.0), np.inf)


def _scale_draws(fit, q: Query, predictive: bool, baseline_risk, sign: int) -> np.ndarray:
    s = q.scale
    if s == "TAU":
        return fit.draws("tau")
    if s == "RATE":
        return fit.draws("rate", predictive=predictive)
    if s in ("OR", "RR", "RD"):
        return fit.draws(s.lower(), predictive=predictive, baseline_risk=baseline_risk)
    rd = fit.draws("rd", predictive=predictive, baseline_risk=baseline_risk)
    return _nnt(rd, sign if s == "NNT" else -sign)


def _linear_vector(fit, q: Query) -> np.ndarray:
    """The coefficients c of c' beta that a COEF or DIFF query is about."""
    if q.scale == "COEF":
        return fit.coefficient_vector(q.args[0])
    return fit.level_vector(q.args[0]) - fit.level_vector(q.args[1])


def _check_scale(fit, q: Query) -> None:
    mk, meas = fit.config.kind, fit.config.effect_measure
    if q.scale in ("COEF", "DIFF"):
        if fit.data.design is None:
            raise InputError(f"query {q.text!r} is about a meta-regression: fit with --mods or --subgroup")
        _linear_vector(fit, q)  # names the coefficients or levels there are
        return
    if mk.estimand == "rate":
        ok = {"RATE", "TAU"}
    else:  # an RR fit has no OR: the OR needs a baseline per study, which the log-RR scale does not carry
        ok = {"RR", "RD", "NNT", "NNH", "TAU"} | ({"OR"} if meas == "OR" else set())
    if q.scale not in ok:
        raise InputError(f"query {q.text!r}: {q.scale} is not available for the {mk.name} model"
                         + (f" on log {meas}" if len(mk.measures) > 1 else "") + f"; available: {', '.join(sorted(ok))}")


def _exact_probability(fit, q: Query, predictive: bool, baseline_risk, sign: int) -> float:
    """P(query) from the quadrature posterior: every scale is a monotone function of mu (or theta_new) at a
    fixed baseline risk, so the probability is the posterior CDF at the inverted threshold."""
    ex = fit.exact
    which = "theta_new" if predictive else "mu"
    if q.scale == "TAU":
        p_below = ex.tau_cdf(q.value)
        return p_below if q.below else 1 - p_below
    meas = fit.config.effect_measure
    p0 = fit.control_risk.value if baseline_risk is None else float(baseline_risk)
    s = q.scale
    if s in ("NNT", "NNH"):
        # NNT < v  <=>  benefit > 1/v  <=>  sign*RD > 1/v
        sgn = sign if s == "NNT" else -sign
        rd_cut = sgn / q.value
        # NNT < v (below) is RD above rd_cut when sgn = +1, below it when sgn = -1
        rd_query = Query(q.text, "RD", (">" if sgn > 0 else "<") if q.below else ("<" if sgn > 0 else ">"), rd_cut)
        return _exact_probability(fit, rd_query, predictive, baseline_risk, sign)
    # threshold on the model scale (log OR or log RR); increasing maps, so the direction is kept
    with np.errstate(divide="ignore", invalid="ignore"):
        if s == meas:
            cut = math.log(q.value)
        elif s == "RR":  # RR from a log OR at p0
            p1 = q.value * p0
            cut = math.inf if p1 >= 1 else float(logit(p1) - logit(p0))
        elif s == "RD":
            p1 = p0 + q.value
            if meas == "OR":
                cut = -math.inf if p1 <= 0 else (math.inf if p1 >= 1 else float(logit(p1) - logit(p0)))
            else:
                cut = -math.inf if p1 <= 0 else math.log(p1 / p0)
        else:  # pragma: no cover - excluded by _check_scale
            raise InputError(f"{s} unavailable")
    if cut == math.inf:
        p_below = 1.0
    elif cut == -math.inf:
        p_below = 0.0
    else:
        p_below = ex.cdf(which, cut)
    return p_below if q.below else 1 - p_below


def probability(fit, query: str | Query, *, predictive: bool = False, baseline_risk: float | None = None,
                direction: str | None = None) -> dict:
    """Posterior probability of a query.

    Parameters
    ----------
    fit : rescuemeta.fit.FitResult
        A fit that passed its convergence guard (fits that fail raise before they exist).
    query : str or Query
        E.g. ``"RR < 0.8"`` (see the module docstring for the grammar).
    predictive : bool
        Ask about the effect in a new study instead of the pooled effect.
    baseline_risk : float, optional
        Control-arm risk at which RR, RD, NNT are evaluated; default the fit's
        (:attr:`rescuemeta.fit.FitResult.control_risk`: the median observed control-arm risk of the included
        studies unless the fit was configured otherwise).
    direction : {"higher", "lower"}, optional
        Whether more events are better (sets the sign of NNT/NNH); default from the data's description
        (``better``), else fewer events are better.

    Returns
    -------
    dict
        ``query``, ``scale``, ``probability`` (the posterior probability that the statement is true),
        ``mcse`` (its Monte Carlo standard error; 0 for the exact normal-normal posterior), ``draws`` (number of
        posterior draws used; null when exact), ``predictive``, ``baseline_risk`` (the value used, null when it
        is a posterior quantity: ``mean-draws`` or ``marginal``), for RR/RD/NNT ``baseline_risk_mode`` and
        ``baseline_risk_note`` (what it is conditional on), and ``method``.
    """
    q = parse_query(query) if isinstance(query, str) else query
    _check_scale(fit, q)
    if baseline_risk is not None and not (0 < float(baseline_risk) < 1):
        raise InputError(f"--baseline-risk must be strictly between 0 and 1, got {baseline_risk}")
    if predictive and q.scale in ("TAU", "COEF", "DIFF"):
        raise InputError(f"query {q.text!r}: {q.scale.lower()} has no new-study (predictive) version")
    desc = getattr(fit, "description", None)
    sign = benefit_sign(fit.config.outcome, direction, desc)
    diag = fit.diagnostics
    if diag is not None and not diag.ok:
        raise InputError("this fit failed its convergence guard: no probability is reported from it")
    out = {"query": q.text, "scale": q.scale, "op": q.op, "value": q.value, "predictive": bool(predictive)}
    if q.scale in ("NNT", "NNH"):
        stated = direction or (desc.better(fit.config.outcome) if desc is not None else None)
        out["benefit"] = ("more events" if sign > 0 else "fewer events") + (
            "" if stated else " (assumed: neither the description nor --direction says)")
    if q.scale in ("COEF", "DIFF"):
        c = _linear_vector(fit, q)
        if fit.exact is not None:
            p_below = fit.exact.cdf(("lin", c), q.value)
            p = p_below if q.below else 1 - p_below
            out.update(probability=float(min(1.0, max(0.0, p))), mcse=0.0, draws=None, baseline_risk=None,
                       method="exact")
            return out
        q_draws = fit.linear_draws(c)
        ind_l = _compare(np.asarray(q_draws), q).astype(float)
        p = float(ind_l.mean())
        import arviz as az

        from .summaries import arviz_numpy

        with arviz_numpy():
            mcse = float(np.asarray(az.mcse(ind_l, method="mean")).ravel()[0]) if 0 < p < 1 else 0.0
        out.update(probability=p, mcse=mcse, draws=int(ind_l.size), baseline_risk=None, method="nuts")
        return out
    if fit.exact is not None:
        p = _exact_probability(fit, q, predictive, baseline_risk, sign)
        bl = fit.control_risk.value if baseline_risk is None else float(baseline_risk)
        out.update(probability=float(min(1.0, max(0.0, p))), mcse=0.0, draws=None, baseline_risk=bl,
                   method="exact")
        _note_control_risk(out, fit, q, baseline_risk)
        return out
    import arviz as az

    from .summaries import arviz_numpy

    ind = indicator(fit, q, predictive=predictive, baseline_risk=baseline_risk, direction=direction)
    if ind.ndim == 1:
        ind = ind[None, :]
    p = float(ind.mean())
    if 0 < p < 1:
        with arviz_numpy():
            mcse = float(np.asarray(az.mcse(ind, method="mean")).ravel()[0])
    else:
        mcse = 0.0  # every draw agrees; the MCSE of an indicator is not estimable from the draws
    bl = float(baseline_risk) if baseline_risk is not None else fit.control_risk.value
    out.update(probability=p, mcse=mcse, draws=int(ind.size), baseline_risk=bl, method="nuts")
    _note_control_risk(out, fit, q, baseline_risk)
    return out


def indicator(fit, query: str | Query, *, predictive: bool = False, baseline_risk: float | None = None,
              direction: str | None = None) -> np.ndarray:
    """Per posterior draw, whether the query's statement holds (the draws :func:`probability` averages).

    Returns
    -------
    ndarray of float
        1.0 where the statement is true, 0.0 where not, shaped as the fit's draws (chain, draw); its mean is the
        probability. Pooled and predictive effects of a sampled fit only (not COEF/DIFF, not exact fits).
    """
    q = parse_query(query) if isinstance(query, str) else query
    _check_scale(fit, q)
    sign = benefit_sign(fit.config.outcome, direction, getattr(fit, "description", None))
    x = _scale_draws(fit, q, predictive, baseline_risk, sign)
    return _compare(np.asarray(x), q).astype(float)


def _note_control_risk(out: dict, fit, q: Query, given) -> None:
    """Every RR/RD/NNT result states the control risk it is conditional on (``baseline_risk_mode``,
    ``baseline_risk_note``)."""
    if q.scale not in ("RR", "RD", "NNT", "NNH"):
        return
    if given is not None:
        out.update(baseline_risk_mode="given", baseline_risk_note=f"the given control-arm risk {float(given):g}")
    else:
        out.update(baseline_risk_mode=fit.control_risk.mode, baseline_risk_note=fit.control_risk.text)
