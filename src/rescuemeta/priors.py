"""The priors stage: parse short prior specs, and evaluate them (densities, samples) on the right scale.

Heterogeneity priors are specified **on tau** (the between-study standard deviation) except two:

* ``invgamma(a, b)`` is an inverse-gamma prior on **tau^2** (shape a, scale b);
* ``turner(OUTCOME, COMPARISON)`` is the log-normal prior on **tau^2** of Turner et al. (2015, Stat Med
  34:984-998, Table IV): log(tau^2) ~ N(mu, sigma^2). ``turner(general)`` is their all-settings prior
  LN(-2.56, 1.74^2).

Every density returned by :meth:`Prior.logpdf` for a heterogeneity prior is the density **of tau**: priors
stated on tau^2 include the Jacobian 2*tau, so they can be compared and integrated on one scale.

Spec grammar: ``name(arg, ...)`` with numeric arguments, except ``turner`` which takes names.

=====================  ==========  ==================================================
spec                   scale       meaning
=====================  ==========  ==================================================
``halfnormal(s)``      tau         |N(0, s^2)|
``halfcauchy(s)``      tau         |Cauchy(0, s)|
``halft(nu, s)``       tau         |t_nu(0, s)|
``exponential(rate)``  tau         Exp(rate), mean 1/rate
``uniform(a, b)``      tau         U(a, b), 0 <= a < b
``lognormal(m, s)``    tau         log(tau) ~ N(m, s^2)
``invgamma(a, b)``     tau^2       tau^2 ~ InvGamma(shape a, scale b)
``turner(o, c)``       tau^2       log(tau^2) ~ N(mu_oc, sigma_oc^2), Table IV
``normal(m, s)``       effect      N(m, s^2) (also for study baselines)
``student_t(nu, m, s)``  effect    t_nu(m, s)
=====================  ==========  ==================================================
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .errors import InputError

# --- Turner et al. 2015, Table IV: log(tau^2) ~ N(mu, sigma^2), log odds ratio scale -------------------
TURNER_COMPARISONS = ("pharma_vs_placebo", "pharma_vs_pharma", "nonpharma_vs_placebo", "nonpharma_vs_pharma",
                      "nonpharma_vs_nonpharma")
TURNER_OUTCOMES = (
    "all_cause_mortality",       # all-cause mortality
    "obstetric",                 # obstetric outcomes
    "cause_specific_mortality",  # cause-specific mortality / major morbidity event / composite
    "resource_use",              # resource use / hospital stay / process
    "device_success",            # surgical / device related success / failure
    "withdrawals",               # withdrawals / drop-outs
    "internal_structure",        # internal / structure-related outcomes
    "physical_health",           # general physical health indicators
    "adverse_events",            # adverse events
    "infection",                 # infection / onset of new disease
    "signs_symptoms",            # signs / symptoms reflecting continuation / end of condition
    "pain",                      # pain
    "quality_of_life",           # quality of life / functioning (dichotomized)
    "mental_health",             # mental health indicators
    "biological_markers",        # biological markers (dichotomized)
    "subjective",                # subjective outcomes (various)
)
# rows: outcomes in the order above; columns: comparisons in the order above
_TURNER_MU = -np.array([
    [3.95, 4.18, 4.17, 2.92, 3.50], [3.52, 3.75, 3.74, 2.49, 3.08], [3.71, 3.95, 3.93, 2.68, 3.27],
    [2.34, 2.58, 2.56, 1.31, 1.90], [2.14, 2.37, 2.36, 1.11, 1.69], [2.99, 3.23, 3.21, 1.96, 2.55],
    [2.71, 2.94, 2.93, 1.67, 2.26], [2.29, 2.53, 2.51, 1.26, 1.85], [1.87, 2.10, 2.10, 0.84, 1.43],
    [2.49, 2.73, 2.71, 1.46, 2.05], [2.06, 2.29, 2.28, 1.03, 1.61], [1.83, 2.06, 2.05, 0.80, 1.38],
    [2.54, 2.78, 2.77, 1.51, 2.10], [2.12, 2.35, 2.34, 1.09, 1.67], [1.77, 2.00, 1.99, 0.74, 1.33],
    [2.70, 2.93, 2.92, 1.67, 2.26]])
_TURNER_SIGMA = np.array([
    [1.34, 1.41, 1.55, 1.02, 1.26], [1.74, 1.79, 1.91, 1.50, 1.68], [1.74, 1.79, 1.91, 1.51, 1.68],
    [1.74, 1.79, 1.91, 1.50, 1.68], [1.74, 1.79, 1.91, 1.50, 1.68], [1.74, 1.79, 1.91, 1.51, 1.68],
    [1.74, 1.79, 1.92, 1.51, 1.68], [1.53, 1.58, 1.72, 1.25, 1.46], [1.52, 1.58, 1.71, 1.24, 1.45],
    [1.52, 1.58, 1.71, 1.24, 1.45], [1.51, 1.58, 1.71, 1.24, 1.45], [1.52, 1.58, 1.71, 1.25, 1.45],
    [1.54, 1.60, 1.73, 1.27, 1.47], [1.53, 1.60, 1.72, 1.27, 1.47], [1.52, 1.58, 1.71, 1.24, 1.45],
    [1.52, 1.58, 1.71, 1.25, 1.45]])
TURNER_GENERAL = (-2.56, 1.74)


def turner_parameters(outcome: str, comparison: str | None = None) -> tuple[float, float]:
    """(mu, sigma) of log(tau^2) for a Turner et al. (2015) outcome and comparison type."""
    if outcome == "general" and comparison is None:
        return TURNER_GENERAL
    if outcome not in TURNER_OUTCOMES:
        raise InputError(f"turner(): unknown outcome type {outcome!r}; choose from general, "
                         + ", ".join(TURNER_OUTCOMES))
    if comparison not in TURNER_COMPARISONS:
        raise InputError(f"turner(): unknown comparison type {comparison!r}; choose from "
                         + ", ".join(TURNER_COMPARISONS))
    i, j = TURNER_OUTCOMES.index(outcome), TURNER_COMPARISONS.index(comparison)
    return float(_TURNER_MU[i, j]), float(_TURNER_SIGMA[i, j])


# --- specs --------------------------------------------------------------------------------------------
TAU_FAMILIES = {"halfnormal": 1, "halfcauchy": 1, "halft": 2, "exponential": 1, "uniform": 2,
                "lognormal": 2, "invgamma": 2, "turner": None}
EFFECT_FAMILIES = {"normal": 2, "student_t": 3}
_SPEC_RE = re.compile(r"^\s*([a-z_]+)\s*\((.*)\)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Prior:
    """A parsed prior.

    Attributes
    ----------
    family : str
        Canonical family name (``turner`` is stored as ``lognormal2``: log-normal on tau^2).
    params : tuple of float
    kind : {"tau", "effect"}
        What it is a prior for (effect priors also serve study baselines).
    spec : str
        The spec as given, normalised.
    """

    family: str
    params: tuple[float, ...]
    kind: str
    spec: str

    @property
    def scale(self) -> str:
        """``tau2`` for priors stated on tau^2 (invgamma, turner), ``tau`` or ``effect`` otherwise."""
        return "tau2" if self.family in ("invgamma", "lognormal2") else self.kind

    def logpdf(self, x):
        """Log density at ``x``: of tau for heterogeneity priors (Jacobian included for tau^2 priors)."""
        from scipy import stats
        x = np.asarray(x, dtype=float)
        f, p = self.family, self.params
        with np.errstate(divide="ignore", invalid="ignore"):
            if f == "normal":
                return stats.norm.logpdf(x, p[0], p[1])
            if f == "student_t":
                return stats.t.logpdf(x, p[0], p[1], p[2])
            out = np.full(x.shape, -np.inf)
            pos = x > 0
            t = x[pos]
            if f == "halfnormal":
                v = stats.halfnorm.logpdf(t, scale=p[0])
            elif f == "halfcauchy":
                v = stats.halfcauchy.logpdf(t, scale=p[0])
            elif f == "halft":
                v = math.log(2) + stats.t.logpdf(t, p[0], scale=p[1])
            elif f == "exponential":
                v = stats.expon.logpdf(t, scale=1 / p[0])
            elif f == "uniform":
                v = stats.uniform.logpdf(t, p[0], p[1] - p[0])
            elif f == "lognormal":
                v = stats.lognorm.logpdf(t, s=p[1], scale=math.exp(p[0]))
            elif f == "invgamma":
                v = stats.invgamma.logpdf(t**2, p[0], scale=p[1]) + np.log(2 * t)
            elif f == "lognormal2":
                v = stats.lognorm.logpdf(t**2, s=p[1], scale=math.exp(p[0])) + np.log(2 * t)
            else:  # pragma: no cover - parse() admits only the families above
                raise ValueError(f)
            out[pos] = v
            return out

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draws on tau (heterogeneity priors) or on the effect scale."""
        f, p = self.family, self.params
        if f == "normal":
            return rng.normal(p[0], p[1], size)
        if f == "student_t":
            return p[1] + p[2] * rng.standard_t(p[0], size)
        if f == "halfnormal":
            return np.abs(rng.normal(0, p[0], size))
        if f == "halfcauchy":
            return np.abs(p[0] * rng.standard_cauchy(size))
        if f == "halft":
            return np.abs(p[1] * rng.standard_t(p[0], size))
        if f == "exponential":
            return rng.exponential(1 / p[0], size)
        if f == "uniform":
            return rng.uniform(p[0], p[1], size)
        if f == "lognormal":
            return np.exp(rng.normal(p[0], p[1], size))
        if f == "invgamma":
            return np.sqrt(p[1] / rng.gamma(p[0], 1.0, size))
        if f == "lognormal2":
            return np.sqrt(np.exp(rng.normal(p[0], p[1], size)))
        raise ValueError(f)  # pragma: no cover

    def ppf(self, q):
        """Quantile function on tau (heterogeneity priors) or on the effect scale."""
        from scipy import stats
        q = np.asarray(q, dtype=float)
        f, p = self.family, self.params
        if f == "normal":
            return stats.norm.ppf(q, p[0], p[1])
        if f == "student_t":
            return stats.t.ppf(q, p[0], p[1], p[2])
        if f == "halfnormal":
            return stats.halfnorm.ppf(q, scale=p[0])
        if f == "halfcauchy":
            return stats.halfcauchy.ppf(q, scale=p[0])
        if f == "halft":
            return p[1] * stats.t.ppf((1 + q) / 2, p[0])
        if f == "exponential":
            return stats.expon.ppf(q, scale=1 / p[0])
        if f == "uniform":
            return stats.uniform.ppf(q, p[0], p[1] - p[0])
        if f == "lognormal":
            return np.exp(stats.norm.ppf(q, p[0], p[1]))
        if f == "invgamma":
            return np.sqrt(stats.invgamma.ppf(q, p[0], scale=p[1]))
        if f == "lognormal2":
            return np.sqrt(np.exp(stats.norm.ppf(q, p[0], p[1])))
        raise ValueError(f)  # pragma: no cover

    def upper(self, mass: float = 1 - 1e-9) -> float:
        """A finite upper end of the support holding ``mass`` of the prior (for quadrature grids)."""
        if self.family == "uniform":
            return float(self.params[1])
        return float(self.ppf(mass))


def parse(spec: str, kind: str = "tau") -> Prior:
    """Parse a prior spec such as ``halfnormal(0.5)`` or ``turner(all_cause_mortality, nonpharma_vs_placebo)``.

    Parameters
    ----------
    spec : str
    kind : {"tau", "effect"}
        Heterogeneity prior, or prior for an effect / study baseline.

    Returns
    -------
    Prior

    Raises
    ------
    InputError
        With the accepted forms, for anything malformed (unknown family, wrong number of arguments,
        non-numeric or out-of-range values).
    """
    families = TAU_FAMILIES if kind == "tau" else EFFECT_FAMILIES
    what = "tau prior" if kind == "tau" else "effect prior"
    forms = ", ".join(f"{k}({'...' if n is None else ', '.join(['x'] * n)})" for k, n in families.items())
    m = _SPEC_RE.match(spec or "")
    if not m:
        raise InputError(f"{what} {spec!r} is not of the form name(args); accepted: {forms}")
    name = m.group(1).lower()
    raw = [a.strip() for a in m.group(2).split(",")] if m.group(2).strip() else []
    if name not in families:
        raise InputError(f"{what} {spec!r}: unknown family {name!r}; accepted: {forms}")
    if name == "turner":
        if len(raw) == 1 and raw[0].lower() == "general":
            mu, sigma = turner_parameters("general")
        elif len(raw) == 2:
            mu, sigma = turner_parameters(raw[0].lower(), raw[1].lower())
        else:
            raise InputError(f"{what} {spec!r}: turner takes (OUTCOME_TYPE, COMPARISON_TYPE) or (general)")
        return Prior("lognormal2", (mu, sigma), kind, f"turner({', '.join(raw)})")
    if len(raw) != families[name]:
        raise InputError(f"{what} {spec!r}: {name} takes {families[name]} argument(s), got {len(raw)}")
    try:
        vals = tuple(float(a) for a in raw)
    except ValueError:
        raise InputError(f"{what} {spec!r}: arguments must be numbers") from None
    if not all(math.isfinite(v) for v in vals):
        raise InputError(f"{what} {spec!r}: arguments must be finite")
    positive = {"halfnormal": [0], "halfcauchy": [0], "halft": [0, 1], "exponential": [0], "lognormal": [1],
                "invgamma": [0, 1], "normal": [1], "student_t": [0, 2]}
    for i in positive.get(name, []):
        if vals[i] <= 0:
            raise InputError(f"{what} {spec!r}: argument {i + 1} must be > 0")
    if name == "uniform" and not (0 <= vals[0] < vals[1]):
        raise InputError(f"{what} {spec!r}: uniform(a, b) on tau needs 0 <= a < b")
    norm = f"{name}({', '.join(f'{v:g}' for v in vals)})"
    return Prior(name, vals, kind, norm)


DEFAULT_TAU_PRIOR = "halfnormal(0.5)"
DEFAULT_EFFECT_PRIOR = "normal(0, 4)"
DEFAULT_BASELINE_PRIOR = "normal(0, 10)"
