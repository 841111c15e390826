"""Bayesian re-analysis of a published pooled ratio (RR or OR with a 95% CI) under explicit priors.

The published line becomes a normal likelihood on the log scale: ``y = log(estimate)``, ``se = (log(high) -
log(low)) / (2 x 1.959964)``. With a normal prior N(m, s^2) on the log ratio the posterior is normal
(conjugate), so medians, intervals and probabilities are exact.

Named priors (log-ratio scale), following Spiegelhalter, Freedman & Parmar (1994, J R Stat Soc A 157:357-416)
and their use for re-analysing trials by Zampieri et al. (2021, Am J Respir Crit Care Med 203:543-552):

* ``reference``: N(0, 10^2): minimally informative (Spiegelhalter, Freedman & Parmar's "reference" prior), so
  the posterior is essentially the published likelihood: the other priors are read against it.
* ``neutral``: N(0, (log 2 / 1.96)^2): centred on no effect, 95% of prior mass between ratio 0.5 and 2.
* ``skeptical``: N(0, s^2) with P(ratio beyond the clinically important effect R) = 5%:
  s = |log R| / 1.645.
* ``enthusiastic``: N(log R, s^2), same s: centred on the important effect, P(no benefit) = 5%.
* ``pessimistic``: N(-log R, s^2), same s: centred on harm of the same size, P(benefit) = 5%.

R (``important``) defaults to 0.8 for outcomes where fewer events are better and 1.25 where more are better.
Every result reports the prior-to-likelihood precision ratio (SE^2 / prior SD^2): above 1 the prior carries more
information than the published line, and the posterior says more about the prior than about the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy import stats

from .defaults import THRESHOLDS as DEFAULT_THRESHOLDS
from .defaults import Z95, Z975
from .errors import InputError
from .priors import parse

__all__ = ["NAMED_PRIORS", "LogNormalPrior", "named_prior", "PublishedEstimate", "posterior", "reanalyze",
           "default_important"]

NAMED_PRIORS = ("reference", "neutral", "skeptical", "enthusiastic", "pessimistic")

# center="auto" asks the printed p-value only when the two centres are this many standard errors apart or more:
# closer, the choice moves a probability such as P(ratio < 1) by at most about 0.08
MATERIAL_SHIFT = 0.2


@dataclass(frozen=True)
class LogNormalPrior:
    name: str
    mean: float
    sd: float
    definition: str


def named_prior(name: str, important: float = 0.8) -> LogNormalPrior:
    """A named prior on the log ratio (see module docstring), or ``normal(m, s)`` given on the log scale."""
    if not (important > 0 and important != 1):
        raise InputError(f"--important must be a ratio > 0 and != 1, got {important}")
    key = name.strip().lower()
    lr = math.log(important)
    s_sk = abs(lr) / Z95
    if key == "reference":
        return LogNormalPrior("reference", 0.0, 10.0, "N(0, 10^2): minimally informative; the posterior is the likelihood")
    if key == "neutral":
        return LogNormalPrior("neutral", 0.0, math.log(2) / Z975, "N(0, (log 2/1.96)^2): 95% between 0.5 and 2")
    if key in ("skeptical", "sceptical"):
        return LogNormalPrior("skeptical", 0.0, s_sk, f"N(0, {s_sk:.3f}^2): P(ratio beyond {important:g}) = 5%")
    if key in ("enthusiastic", "optimistic"):
        return LogNormalPrior("enthusiastic", lr, s_sk,
                              f"N(log {important:g}, {s_sk:.3f}^2): P(no benefit) = 5%")
    if key == "pessimistic":
        return LogNormalPrior("pessimistic", -lr, s_sk,
                              f"N(log {1 / important:.3g}, {s_sk:.3f}^2): P(benefit) = 5%")
    try:
        p = parse(name, "effect")
    except InputError as e:
        raise InputError(f"--prior {name!r}: not one of {', '.join(NAMED_PRIORS)} and not normal(m, s) on the log "
                         f"scale ({e.message})") from None
    if p.family != "normal":
        raise InputError(f"--prior {name!r}: the conjugate re-analysis takes normal(m, s) priors only")
    return LogNormalPrior(p.spec, p.params[0], p.params[1], f"{p.spec} on the log ratio")


@dataclass
class PublishedEstimate:
    """A printed ratio and its 95% CI, turned into a normal likelihood on the log scale."""

    measure: str
    estimate: float
    ci_low: float
    ci_high: float
    center: str = "estimate"
    label: str = ""
    p_text: str = ""  # the printed p-value, e.g. "P = 0.04" (lets center="auto" choose between the two centres)

    def __post_init__(self):
        if self.measure not in ("RR", "OR"):
            raise InputError(f"--measure must be RR or OR, got {self.measure!r}")
        for name in ("estimate", "ci_low", "ci_high"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise InputError(f"{self.label or 'input'}: {name} must be a positive ratio, got {v!r}")
        if not self.ci_low < self.ci_high:
            raise InputError(f"{self.label or 'input'}: the CI must have low < high, got {self.ci_low}-{self.ci_high}")
        if self.center not in ("estimate", "midpoint", "auto"):
            raise InputError(f"--center must be 'auto', 'estimate' or 'midpoint', got {self.center!r}")
        self._choice = self._choose_center()

    @property
    def se(self) -> float:
        return (math.log(self.ci_high) - math.log(self.ci_low)) / (2 * Z975)

    @property
    def midpoint(self) -> float:
        return (math.log(self.ci_high) + math.log(self.ci_low)) / 2

    @property
    def used_center(self) -> str:
        """``estimate`` or ``midpoint``: the centre the likelihood uses (``center="auto"`` resolved)."""
        return self._choice[0]

    @property
    def center_reason(self) -> str:
        """Why that centre (in words, printed next to the result)."""
        return self._choice[1]

    @property
    def y(self) -> float:
        return math.log(self.estimate) if self.used_center == "estimate" else self.midpoint

    def implied_p(self, center: str) -> float:
        """Two-sided p of no effect when the likelihood is centred on ``center`` (SE from the CI width)."""
        from .freq import norm_sf2

        y = math.log(self.estimate) if center == "estimate" else self.midpoint
        return norm_sf2(y / self.se)

    def _irregular(self) -> bool:
        """The estimate at or outside a CI limit, or off the CI's geometric midpoint by more than the printed
        rounding allows (each number taken to +/- half a unit of its last printed digit)."""
        if not (self.ci_low < self.estimate < self.ci_high):
            return True
        he, hl, hh = (_half_unit(x) for x in (self.estimate, self.ci_low, self.ci_high))
        lo_mid = math.sqrt(max(self.ci_low - hl, 0.0) * (self.ci_high - hh))
        hi_mid = math.sqrt((self.ci_low + hl) * (self.ci_high + hh))
        return hi_mid < self.estimate - he or lo_mid > self.estimate + he

    def _choose_center(self) -> tuple[str, str]:
        """``auto``: the printed estimate for a regular line; for a line the audit flags (estimate at or outside a
        CI limit, or off the CI's geometric midpoint beyond rounding) whose two centres lie at least
        :data:`MATERIAL_SHIFT` standard errors apart, the centre whose implied p matches the printed p; when no
        printed p decides between them, an InputError asking for --center."""
        if self.center != "auto":
            return self.center, f"the {'printed estimate' if self.center == 'estimate' else 'CI midpoint'}, as asked"
        if not self._irregular():
            return "estimate", "the printed estimate"
        shift = abs(math.log(self.estimate) - self.midpoint) / self.se
        if shift < MATERIAL_SHIFT:
            return "estimate", (f"the printed estimate: the CI midpoint lies only {shift:.2f} standard errors away, "
                                "too close to change the answer materially")
        from .check import p_matches

        where = self.label or "the printed line"
        p_est, p_mid = self.implied_p("estimate"), self.implied_p("midpoint")
        fits = {c: p_matches(p, self.p_text) for c, p in (("estimate", p_est), ("midpoint", p_mid))}
        if fits["estimate"] is None:
            raise InputError(f"{where}: the estimate {self.estimate:g} does not sit in the middle of its CI "
                             f"{self.ci_low:g}-{self.ci_high:g} (log scale) and no printed p-value says which is right; "
                             "give --center estimate or --center midpoint")
        if fits["estimate"] != fits["midpoint"]:
            c = "estimate" if fits["estimate"] else "midpoint"
            other = "midpoint" if c == "estimate" else "estimate"
            return c, (f"the {'printed estimate' if c == 'estimate' else 'CI midpoint'}: its implied p "
                       f"{self.implied_p(c):.2g} matches the printed '{self.p_text}' (the {other}'s implies "
                       f"{self.implied_p(other):.2g})")
        agree = "both match" if fits["estimate"] else "neither matches"
        raise InputError(f"{where}: the estimate {self.estimate:g} does not sit in the middle of its CI and the "
                         f"printed '{self.p_text}' cannot decide ({agree}: implied p {p_est:.2g} from the estimate, "
                         f"{p_mid:.2g} from the CI midpoint); give --center estimate or --center midpoint")

    def flags(self) -> list[str]:
        """Warnings about the printed line: estimate outside its CI, or a CI far from symmetric on the log scale
        (|log estimate - CI midpoint| > 10% of the half-width)."""
        out = []
        le, half = math.log(self.estimate), (math.log(self.ci_high) - math.log(self.ci_low)) / 2
        if not (self.ci_low <= self.estimate <= self.ci_high):
            out.append(f"the estimate {self.estimate:g} lies outside its CI {self.ci_low:g}-{self.ci_high:g}")
        elif self.estimate in (self.ci_low, self.ci_high):
            out.append(f"the estimate {self.estimate:g} equals a CI limit ({self.ci_low:g}-{self.ci_high:g})")
        if abs(le - self.midpoint) > 0.1 * half:
            out.append(f"the CI is asymmetric on the log scale around the estimate (CI midpoint {math.exp(self.midpoint):.3g}"
                       f" vs estimate {self.estimate:g})")
        if out:
            used = (f"log({self.estimate:g})" if self.used_center == "estimate" else
                    f"the CI's log midpoint (ratio {math.exp(self.midpoint):.3g})")
            out.append(f"used: centre {used}, SE {self.se:.4f} from the CI width (log({self.ci_high:g}/"
                       f"{self.ci_low:g}) / 3.92); why this centre: {self.center_reason}; --center chooses it")
        return out


def _half_unit(x: float) -> float:
    """Half a unit of the last digit of ``x`` as a person would print it (0.75 -> 0.005, 4.3 -> 0.05)."""
    text = repr(float(x))
    if "e" in text or "." not in text:
        return 0.0
    decimals = len(text.split(".")[1].rstrip("0"))
    return 0.5 * 10.0 ** -decimals if decimals else 0.5


def posterior(est: PublishedEstimate, prior: LogNormalPrior) -> tuple[float, float]:
    """Conjugate normal posterior (mean, sd) of the log ratio."""
    prec = 1 / prior.sd**2 + 1 / est.se**2
    mean = (prior.mean / prior.sd**2 + est.y / est.se**2) / prec
    return mean, math.sqrt(1 / prec)


def reanalyze(est: PublishedEstimate, priors: list[str], thresholds=DEFAULT_THRESHOLDS, important: float = 0.8,
              better: str | None = None) -> dict:
    """Posterior of the published ratio under each prior.

    Returns
    -------
    dict
        ``input`` (the line, its log-scale centre and SE, ``flags``) and ``results``: per prior ``prior``,
        ``definition``, ``prior_mean``/``prior_sd`` (log scale), ``median``, ``ci_low``, ``ci_high`` (posterior
        median and 95% credible interval on the ratio scale) and ``probabilities``: ``[{threshold, query,
        probability}]``, exact: the probability of benefit beyond each threshold in the outcome's direction,
        P(ratio < t | data), or, where more events are better (``better="higher"``), P(ratio > 1/t | data)
        (``query`` says which; ``threshold`` is the ratio in that query).
    """
    th = [float(t) for t in thresholds]
    if not th or any(not (t > 0 and math.isfinite(t)) for t in th):
        raise InputError(f"--threshold values must be positive ratios, got {thresholds}")
    results = []
    for name in priors:
        pr = named_prior(name, important)
        m, s = posterior(est, pr)
        results.append({
            "prior": pr.name, "definition": pr.definition, "prior_mean": pr.mean, "prior_sd": pr.sd,
            "precision_ratio": est.se**2 / pr.sd**2,
            "median": math.exp(m), "ci_low": math.exp(m - Z975 * s), "ci_high": math.exp(m + Z975 * s),
            "log_mean": m, "log_sd": s,
            "probabilities": [_benefit(t, m, s, better) for t in th],
        })
    return {"input": {"label": est.label, "measure": est.measure, "estimate": est.estimate, "ci_low": est.ci_low,
                      "ci_high": est.ci_high, "log_center": est.y, "center": est.used_center,
                      "center_reason": est.center_reason, "p_printed": est.p_text or None, "se": est.se,
                      "flags": est.flags()},
            "results": results}


def _benefit(t: float, m: float, s: float, better: str | None) -> dict:
    if better == "higher":  # the mirrored threshold: benefit is a ratio above 1/t
        u = 1 / t
        return {"threshold": u, "query": f"{'ratio'} > {u:.4g}",
                "probability": float(stats.norm.sf((math.log(u) - m) / s))}
    return {"threshold": t, "query": f"ratio < {t:g}", "probability": float(stats.norm.cdf((math.log(t) - m) / s))}


def default_important(better: str | None) -> float:
    """The clinically important ratio by default: 1.25 where more events are better (``better="higher"``),
    0.8 otherwise."""
    return 1.25 if better == "higher" else 0.8


from . import _callable_module  # noqa: E402

_callable_module(__name__, "reanalyze")
