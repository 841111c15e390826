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
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import InputError

__all__ = ["TURNER_COMPARISONS", "TURNER_OUTCOMES", "TURNER_GENERAL", "turner_parameters", "Family", "FAMILIES",
           "spec_families", "Prior", "parse", "TURNER_DEFAULT_COMPARISON", "is_matched",
           "resolve_matched", "DEFAULT_TAU_PRIOR", "DEFAULT_EFFECT_PRIOR", "DEFAULT_BASELINE_PRIOR"]

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


# --- the prior families: one registry entry each ------------------------------------------------------
@dataclass(frozen=True)
class Family:
    """A prior family: everything the package needs to know about it, in one place.

    Attributes
    ----------
    name : str
        As written in a spec (``lognormal2`` is internal: what ``turner(...)`` parses to).
    kind : {"tau", "effect"}
        A heterogeneity prior, or a prior for an effect / study baseline.
    args : tuple of str
        Argument names, in the spec's order.
    positive : tuple of int
        Arguments that must be > 0.
    scale : {"tau", "tau2", "effect"}
        The variable the distribution is stated on; ``tau2`` densities on tau get the Jacobian 2 tau.
    dist : callable
        ``dist(params)``: the scipy.stats distribution on that variable (``folded``: of X where the prior is |X|).
    draw : callable
        ``draw(rng, params, size)``: draws on tau (tau families) or on the effect scale.
    pymc : callable
        ``pymc(pm, par)``: tau families create the PyMC variable ``tau`` (through ``tau2`` for tau^2 families);
        effect families return an unnamed PyMC distribution (``.dist``) with ``par`` its parameter vector.
    folded : bool
        The prior is |X| for X ~ ``dist`` (density doubled on tau > 0, quantile at (1 + q) / 2).
    location_scale : tuple of int, optional
        Effect families: where location and scale sit in the parameters (for the sampler's standardisation).
    check : callable, optional
        ``check(params)``: a message when the parameters are invalid beyond positivity, else None.
    """

    name: str
    kind: str
    args: tuple[str, ...]
    positive: tuple[int, ...]
    scale: str
    dist: Callable
    draw: Callable
    pymc: Callable
    folded: bool = False
    location_scale: tuple[int, int] | None = None
    check: Callable | None = None


def _stats():
    from scipy import stats
    return stats


def _tau2(pm, var):
    return pm.Deterministic("tau", pm.math.sqrt(var))


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("halfnormal", "tau", ("sigma",), (0,), "tau", lambda p: _stats().halfnorm(scale=p[0]),
           lambda rng, p, n: np.abs(rng.normal(0, p[0], n)), lambda pm, p: pm.HalfNormal("tau", sigma=p[0])),
    Family("halfcauchy", "tau", ("scale",), (0,), "tau", lambda p: _stats().halfcauchy(scale=p[0]),
           lambda rng, p, n: np.abs(p[0] * rng.standard_cauchy(n)), lambda pm, p: pm.HalfCauchy("tau", beta=p[0])),
    Family("halft", "tau", ("nu", "scale"), (0, 1), "tau", lambda p: _stats().t(p[0], scale=p[1]),
           lambda rng, p, n: np.abs(p[1] * rng.standard_t(p[0], n)),
           lambda pm, p: pm.HalfStudentT("tau", nu=p[0], sigma=p[1]), folded=True),
    Family("exponential", "tau", ("rate",), (0,), "tau", lambda p: _stats().expon(scale=1 / p[0]),
           lambda rng, p, n: rng.exponential(1 / p[0], n), lambda pm, p: pm.Exponential("tau", lam=p[0])),
    Family("uniform", "tau", ("lower", "upper"), (), "tau", lambda p: _stats().uniform(p[0], p[1] - p[0]),
           lambda rng, p, n: rng.uniform(p[0], p[1], n), lambda pm, p: pm.Uniform("tau", lower=p[0], upper=p[1]),
           check=lambda p: None if 0 <= p[0] < p[1] else "uniform(a, b) on tau needs 0 <= a < b"),
    Family("lognormal", "tau", ("mu", "sigma"), (1,), "tau", lambda p: _stats().lognorm(s=p[1], scale=math.exp(p[0])),
           lambda rng, p, n: np.exp(rng.normal(p[0], p[1], n)), lambda pm, p: pm.LogNormal("tau", mu=p[0], sigma=p[1])),
    Family("invgamma", "tau", ("shape", "scale"), (0, 1), "tau2", lambda p: _stats().invgamma(p[0], scale=p[1]),
           lambda rng, p, n: np.sqrt(p[1] / rng.gamma(p[0], 1.0, n)),
           lambda pm, p: _tau2(pm, pm.InverseGamma("tau2", alpha=p[0], beta=p[1]))),
    Family("lognormal2", "tau", ("mu", "sigma"), (1,), "tau2", lambda p: _stats().lognorm(s=p[1], scale=math.exp(p[0])),
           lambda rng, p, n: np.sqrt(np.exp(rng.normal(p[0], p[1], n))),
           lambda pm, p: _tau2(pm, pm.LogNormal("tau2", mu=p[0], sigma=p[1]))),
    Family("normal", "effect", ("mean", "sd"), (1,), "effect", lambda p: _stats().norm(p[0], p[1]),
           lambda rng, p, n: rng.normal(p[0], p[1], n), lambda pm, p: pm.Normal.dist(mu=p[0], sigma=p[1]),
           location_scale=(0, 1)),
    Family("student_t", "effect", ("nu", "location", "scale"), (0, 2), "effect",
           lambda p: _stats().t(p[0], p[1], p[2]), lambda rng, p, n: p[1] + p[2] * rng.standard_t(p[0], n),
           lambda pm, p: pm.StudentT.dist(nu=p[0], mu=p[1], sigma=p[2]), location_scale=(1, 2)),
)}



def spec_families(kind: str) -> dict[str, int | None]:
    """What a spec may name for a ``kind`` of prior, with each family's number of arguments: every registered
    family of that kind (``lognormal2`` only through ``turner``, whose arguments are names)."""
    out: dict[str, int | None] = {n: len(f.args) for n, f in FAMILIES.items() if f.kind == kind and n != "lognormal2"}
    if kind == "tau":
        out["turner"] = None
    return out


_SPEC_RE = re.compile(r"^\s*([a-z_]+)\s*\((.*)\)\s*$", re.IGNORECASE)


@lru_cache(maxsize=256)
def _frozen(family: str, params: tuple[float, ...]):
    """The family's frozen scipy distribution, built once per (family, parameters): freezing one costs ~1 ms,
    and a 50-prior grid evaluates ~750 log densities (issue 19)."""
    return FAMILIES[family].dist(params)


@dataclass(frozen=True)
class Prior:
    """A parsed prior.

    Attributes
    ----------
    family : str
        Canonical family name, a key of :data:`FAMILIES` (``turner`` is stored as ``lognormal2``: log-normal
        on tau^2).
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
    def definition(self) -> Family:
        return FAMILIES[self.family]

    @property
    def scale(self) -> str:
        """``tau2`` for priors stated on tau^2 (invgamma, turner), ``tau`` or ``effect`` otherwise."""
        return self.definition.scale

    def _dist(self):
        return _frozen(self.family, self.params)

    def logpdf(self, x):
        """Log density at ``x``: of tau for heterogeneity priors (Jacobian included for tau^2 priors)."""
        x = np.asarray(x, dtype=float)
        fam, dist = self.definition, self._dist()
        with np.errstate(divide="ignore", invalid="ignore"):
            if fam.kind == "effect":
                return dist.logpdf(x)
            out = np.full(x.shape, -np.inf)
            pos = x > 0
            t = x[pos]
            if fam.scale == "tau2":
                v = dist.logpdf(t**2) + np.log(2 * t)
            elif fam.folded:
                v = math.log(2) + dist.logpdf(t)
            else:
                v = dist.logpdf(t)
            out[pos] = v
            return out

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draws on tau (heterogeneity priors) or on the effect scale."""
        return self.definition.draw(rng, self.params, size)

    def ppf(self, q):
        """Quantile function on tau (heterogeneity priors) or on the effect scale."""
        q = np.asarray(q, dtype=float)
        fam, dist = self.definition, self._dist()
        if fam.scale == "tau2":
            return np.sqrt(dist.ppf(q))
        if fam.folded:
            return dist.ppf((1 + q) / 2)
        return dist.ppf(q)

    @property
    def lower(self) -> float:
        """The lower end of the support (0 for tau priors, except uniform(a, b))."""
        return float(self.ppf(0.0))

    @property
    def bounded(self) -> bool:
        """Whether the support has a finite upper end."""
        return bool(np.isfinite(self.ppf(1.0)))

    def upper(self, mass: float = 1 - 1e-9) -> float:
        """A finite upper end of the support holding ``mass`` of the prior (for quadrature grids)."""
        if self.bounded:
            return float(self.ppf(1.0))
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
    families = spec_families(kind)
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
    fam = FAMILIES[name]
    for i in fam.positive:
        if vals[i] <= 0:
            raise InputError(f"{what} {spec!r}: argument {i + 1} ({fam.args[i]}) must be > 0")
    problem = fam.check(vals) if fam.check is not None else None
    if problem:
        raise InputError(f"{what} {spec!r}: {problem}")
    norm = f"{name}({', '.join(f'{v:g}' for v in vals)})"
    return Prior(name, vals, kind, norm)


# ``turner(matched)`` / ``turner(matched, COMPARISON)`` in a list of tau priors picks the Turner et al. (2015)
# outcome type that the data's description gives each outcome (``[outcomes.NAME] turner = "..."``), and the
# comparison type of ``[dataset] turner_comparison`` (default below).
TURNER_DEFAULT_COMPARISON = "nonpharma_vs_placebo"


def is_matched(spec: str) -> bool:
    """Whether ``spec`` is ``turner(matched[, COMPARISON])``, resolved per outcome by :func:`resolve_matched`."""
    return spec.replace(" ", "").lower().startswith("turner(matched")


def resolve_matched(spec: str, outcome: str, desc) -> str:
    """``turner(matched[, COMPARISON])`` -> ``turner(OUTCOME_TYPE, COMPARISON)`` for this outcome, from the
    data's description (:class:`rescuemeta.description.Description`); InputError where it names no type."""
    inner = spec.strip()[len("turner("):-1]
    parts = [x.strip() for x in inner.split(",")]
    comparison = parts[1] if len(parts) > 1 else (desc.turner_comparison or TURNER_DEFAULT_COMPARISON)
    if desc.turner(outcome) is None:
        raise InputError(f"tau prior {spec!r}: the data's description gives outcome {outcome!r} no Turner outcome "
                         "type ([outcomes.NAME] turner = \"...\"); give turner(OUTCOME_TYPE, COMPARISON) explicitly")
    return f"turner({desc.turner(outcome)}, {comparison})"


DEFAULT_TAU_PRIOR = "halfnormal(0.5)"
DEFAULT_EFFECT_PRIOR = "normal(0, 4)"
DEFAULT_BASELINE_PRIOR = "normal(0, 10)"


def parse_bias_prior(spec: str) -> tuple[float, float]:
    """``normal(m, s)`` -> (m, s): the mean and SD of the additive bias of a non-randomised row's log ratio."""
    try:
        p = parse(spec, "effect")
    except InputError as e:
        raise InputError(f"--bias-prior: {e.message}") from None
    if p.family != "normal":
        raise InputError(f"--bias-prior must be normal(m, s) (an additive bias on the log scale), not {spec}")
    return float(p.params[0]), float(p.params[1])
