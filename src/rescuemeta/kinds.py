"""The model kinds: one registry entry each (:data:`MODEL_KINDS`), saying what data a kind takes, what it
estimates, how its likelihood enters the PyMC model and the pointwise log-likelihood, and which frequentist
method sits beside it. Everything that differs between kinds reads its entry here: selecting rows, building
the arrays and the model, the sampler's normal approximation, the InferenceData groups, the summaries, the
report and the pipeline. This module imports only numpy and scipy; PyMC is passed in where a likelihood is
built, so the command line can list the kinds without loading it.

* ``contrast`` (two arms, exact binomial likelihood; Smith, Spiegelhalter & Thomas 1995):
  logit p_control,i = alpha_i, logit p_treat,i = alpha_i + theta_i; ``mu`` is the pooled log odds ratio.
* ``proportion`` (one arm): logit p_i = theta_i; ``mu`` is the pooled logit event rate.
* ``normal``: y_i ~ N(theta_i, s_i^2) on study log OR / log RR (metafor's escalc, 1/2 added to zero cells);
  its posterior is computed exactly by quadrature (:mod:`rescuemeta.exact`).

In every kind theta_i ~ N(mu, tau^2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["Arrays", "ModelKind", "STUDY", "DRAWS", "PAD_SE", "MODEL_KINDS", "get"]


@dataclass(frozen=True)
class Arrays:
    """What a kind's :attr:`ModelKind.prepare` returns: the model's arrays, the studies kept (in order) and the
    ones it dropped with a reason."""

    arrays: dict[str, np.ndarray]
    study_ids: list[str]
    dropped: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class ModelKind:
    """A model kind.

    Attributes
    ----------
    name : str
    arms : {"two", "one"}
        Rows with both arms, or the treatment arm of every row (:func:`rescuemeta.data.select`).
    measures : tuple of str
        The scales the kind can be fitted on; the first is its default (``PLO``: logit rate).
    estimand : {"ratio", "rate"}
        What is summarised on the natural scale: OR/RR/RD (at a control risk) or the event rate.
    control_risk : {"draws", "observed"} or None
        Which control risks RR and RD can be conditional on: ``draws``: the study baselines are modelled, so
        besides a fixed risk (the median observed one by default) also the per-draw mean of the baselines and the
        population-averaged (marginal) risks; ``observed``: a fixed risk only.
    baseline_prior : bool
        Study baselines alpha_i with a prior of their own (``baseline_prior`` in specs).
    exact : bool
        An exact quadrature posterior exists (the default method; ``--nuts`` samples it instead).
    binomial : bool
        Counts with a binomial likelihood: the binomial kinds share one compiled graph (the contrast graph,
        baselines switched off for proportions; see :mod:`rescuemeta.models`).
    reference_method : str
        The frequentist method shown beside it (:func:`rescuemeta.pipeline.frequentist_reference`).
    prepare : callable
        ``prepare(selection, measure) -> Arrays`` (a :class:`rescuemeta.data.Selection`).
    reads_estimates : bool
        The kind can use a row's reported estimate (a normal likelihood on the log ratio); the binomial kinds
        need counts.
    approximation : callable
        ``approximation(arrays) -> dict``: a normal approximation of each study's likelihood on the model scale
        (``approx_y``, ``approx_prec``; ``base_shift``, ``base_center``, ``base_prec`` for the baselines), used only to
        parameterise the sampler.
    observed : callable
        ``observed(arrays, pad) -> dict``: the observations as ``pm.Data`` values, padded with ``pad`` studies
        that carry no information.
    likelihood : callable
        ``likelihood(pm, data, theta, alpha)``: adds the observed variables to the PyMC model being built.
    pointwise : callable
        ``pointwise(arrays, posterior, rng) -> (log_lik, predictive, observed, constant)``: per-draw, per-study
        log-likelihood, posterior-predictive draws of the observations, and the observed and constant data
        (name -> (dims, values)), for the InferenceData groups.
    tau_scale : str
        What tau is the standard deviation of, in words (``log odds ratios``, ``logit event rates``).
    default_tau_prior : str
        The kind's default heterogeneity prior (see :data:`TAU_PRIOR_REASONS` and the README).
    sensitivity_tau_priors : tuple of str
        The kind's default prior-sensitivity grid (``turner(matched)`` resolved per outcome).
    turner_priors : bool
        Whether the Turner et al. (2015) priors, which describe the heterogeneity of log odds ratios in
        randomised comparisons, apply to this kind's tau.
    """

    name: str
    arms: str
    measures: tuple[str, ...]
    estimand: str
    control_risk: str | None
    baseline_prior: bool
    exact: bool
    binomial: bool
    reference_method: str
    prepare: Callable[..., Arrays]
    approximation: Callable[[dict], dict]
    observed: Callable[[dict, int], dict]
    likelihood: Callable[..., None]
    pointwise: Callable[..., tuple[Any, dict, dict, dict]]
    tau_scale: str = "log odds ratios"
    reads_estimates: bool = False
    default_tau_prior: str = "halfnormal(0.5)"
    sensitivity_tau_priors: tuple[str, ...] = ("halfnormal(0.25)", "halfnormal(0.5)", "halfnormal(1)", "halfcauchy(0.5)",
                                               "turner(matched)")
    turner_priors: bool = True
    pad_log_lik: float = 0.0  # the log likelihood of one padded study (a constant, removed from marginal likelihoods)

    def check_tau_prior(self, spec: str) -> None:
        """Refuse a heterogeneity prior that does not describe this kind's tau (InputError saying why and what
        to use instead): the Turner et al. (2015) priors for a kind without comparisons."""
        if not self.turner_priors and spec.replace(" ", "").lower().startswith("turner("):
            raise InputError(
                f"tau prior {spec!r} does not apply to the {self.name} model: the Turner et al. (2015) priors describe "
                f"the between-study SD of log odds ratios in randomised comparisons, while this model's tau is the SD "
                f"of {self.tau_scale} across studies, which is typically larger (case mix moves rates; a ratio cancels "
                f"it). Use a prior on that scale, e.g. {self.default_tau_prior} (the {self.name} model's default)")

    def measure(self, requested: str | None = None) -> str:
        """The scale a fit is on: the requested measure where the kind offers a choice, else its only one."""
        if len(self.measures) > 1 and requested in self.measures:
            return requested
        return self.measures[0]


# --- helpers shared by the binomial kinds ----------------------------------------------------------------

def _logit_cc(events, total):
    """Empirical logit with 1/2 added to both cells, and its approximate variance."""
    e, n = np.asarray(events, dtype=float), np.asarray(total, dtype=float)
    return np.log((e + 0.5) / (n - e + 0.5)), 1 / (e + 0.5) + 1 / (n - e + 0.5)


def _ints(x, pad: int) -> np.ndarray:
    return np.concatenate([np.asarray(x, dtype="int64"), np.zeros(pad, dtype="int64")])


def _expit(x):
    from scipy.special import expit
    return expit(x)


def _binom_logpmf(k, n, p):
    from scipy import stats
    return stats.binom.logpmf(k, n, p)


STUDY = ("study",)
DRAWS = ("chain", "draw", "study")


# --- contrast -----------------------------------------------------------------------------------------------

def _contrast_prepare(sel, measure) -> Arrays:
    """Counts; a row analysed by its reported log OR (``sel.reported``) gets zero counts (its binomial terms
    vanish) and ``est_y``, ``est_s``, ``est_mask`` = 1: a normal likelihood on its theta_i."""
    ai, n1i, ci, n2i = (np.nan_to_num(np.asarray(x, dtype=float)) for x in sel.counts())
    rep = sel.reported
    z = np.where(rep, 0, 1)
    arrays = {"ai": (ai * z).astype(int), "n1i": (n1i * z).astype(int), "ci": (ci * z).astype(int),
              "n2i": (n2i * z).astype(int)}
    if rep.any():
        yi, vi, _ = sel.effect_sizes("OR")
        arrays.update(est_y=np.where(rep, yi, 0.0), est_s=np.where(rep, np.sqrt(np.where(rep, vi, 1.0)), 1.0),
                      est_mask=rep.astype(float))
    return Arrays(arrays, list(sel.study_ids))


def _contrast_approximation(a: dict) -> dict:
    yt, vt = _logit_cc(a["ai"], a["n1i"])
    yc, vc = _logit_cc(a["ci"], a["n2i"])
    c = vc / (vc + vt)
    out = {"approx_y": yt - yc, "approx_prec": 1 / (vc + vt), "base_shift": c, "base_center": yc + c * (yt - yc),
           "base_prec": 1 / vc + 1 / vt}
    if "est_mask" in a:  # reported rows: their own log OR and precision; no baseline data
        m = np.asarray(a["est_mask"]) > 0
        out["approx_y"] = np.where(m, a["est_y"], out["approx_y"])
        out["approx_prec"] = np.where(m, 1 / np.asarray(a["est_s"]) ** 2, out["approx_prec"])
        for k in ("base_shift", "base_center", "base_prec"):
            out[k] = np.where(m, 0.0, out[k])
    return out


def _padded(x, pad: int, value: float) -> np.ndarray:
    return np.concatenate([np.asarray(x, dtype=float), np.full(pad, value)])


# optional per-study arrays of the contrast graph and their padding values: reported estimates and the bias model
CONTRAST_EXTRAS = {"est_y": 0.0, "est_s": 1.0, "est_mask": 0.0, "bias_mean": 0.0, "bias_var": 0.0}


REPORTED_ARRAYS = ("est_y", "est_s", "est_mask")  # always in the binomial graph (mask 0: no reported rows)


def _contrast_observed(a: dict, pad: int) -> dict:
    k = len(a["ai"])
    d = {"events_treat": _ints(a["ai"], pad), "n_treat": _ints(a["n1i"], pad),
         "events_control": _ints(a["ci"], pad), "n_control": _ints(a["n2i"], pad)}
    d.update({key: _padded(a.get(key, np.full(k, v)), pad, v) for key, v in CONTRAST_EXTRAS.items()
              if key in a or key in REPORTED_ARRAYS})
    return d


def _contrast_likelihood(pm, d, theta, alpha) -> None:
    pm.Binomial("y_control", n=d["n_control"], logit_p=alpha, observed=d["events_control"], dims="study")
    lp_treat = (d["use_baseline"] * alpha if "use_baseline" in d else alpha) + theta
    pm.Binomial("y_treat", n=d["n_treat"], logit_p=lp_treat, observed=d["events_treat"], dims="study")
    if "est_mask" in d:  # reported log ORs: normal likelihood on theta_i (rows with est_mask 1)
        r = (d["est_y"] - theta) / d["est_s"]
        pm.Potential("y_reported", pm.math.sum(d["est_mask"] * (-0.5 * r**2 - pm.math.log(d["est_s"])
                                                               - 0.5 * np.log(2 * np.pi))))


def _contrast_pointwise(a: dict, post: dict, rng: np.random.Generator):
    n1, ai = np.asarray(a["n1i"], dtype="int64"), np.asarray(a["ai"], dtype="int64")
    n2, c = np.asarray(a["n2i"], dtype="int64"), np.asarray(a["ci"], dtype="int64")
    p_t, p_c = _expit(post["alpha"] + post["theta"]), _expit(post["alpha"])
    ll = _binom_logpmf(ai, n1, p_t) + _binom_logpmf(c, n2, p_c)
    pp = {"y_control": (DRAWS, rng.binomial(n2, p_c)), "y_treat": (DRAWS, rng.binomial(n1, p_t))}
    obs = {"y_treat": (STUDY, ai), "y_control": (STUDY, c)}
    const = {"n_treat": (STUDY, n1), "n_control": (STUDY, n2)}
    if "est_mask" in a:
        from scipy import stats

        m = np.asarray(a["est_mask"]) > 0
        ll = ll + np.where(m, stats.norm.logpdf(a["est_y"], post["theta"], a["est_s"]), 0.0)
        pp["y_reported"] = (DRAWS, np.where(m, rng.normal(post["theta"], a["est_s"]), np.nan))
        obs["y_reported"] = (STUDY, np.where(m, a["est_y"], np.nan))
        const["se_reported"] = (STUDY, np.where(m, a["est_s"], np.nan))
    return ll, pp, obs, const


# --- proportion ---------------------------------------------------------------------------------------------

def _proportion_prepare(sel, measure) -> Arrays:
    ai, n1i, ci, n2i = sel.counts()
    ids = sel.study_ids
    return Arrays({"ai": ai.astype(int), "n1i": n1i.astype(int)}, list(ids))


def _proportion_approximation(a: dict) -> dict:
    yt, vt = _logit_cc(a["ai"], a["n1i"])
    k = len(yt)
    return {"approx_y": yt, "approx_prec": 1 / vt, "base_shift": np.zeros(k), "base_center": np.zeros(k),
            "base_prec": np.zeros(k)}


def _proportion_observed(a: dict, pad: int) -> dict:
    return {"events_treat": _ints(a["ai"], pad), "n_treat": _ints(a["n1i"], pad)}


def _proportion_likelihood(pm, d, theta, alpha) -> None:
    pm.Binomial("y_treat", n=d["n_treat"], logit_p=theta, observed=d["events_treat"], dims="study")


def _proportion_pointwise(a: dict, post: dict, rng: np.random.Generator):
    n1, ai = np.asarray(a["n1i"], dtype="int64"), np.asarray(a["ai"], dtype="int64")
    p_t = _expit(post["theta"])
    return (_binom_logpmf(ai, n1, p_t), {"y_treat": (DRAWS, rng.binomial(n1, p_t))},
            {"y_treat": (STUDY, ai)}, {"n_treat": (STUDY, n1)})


# --- normal -------------------------------------------------------------------------------------------------

PAD_SE = 1e8  # standard error given to padded studies of the normal model (likelihood gradient ~1e-16)


def _normal_prepare(sel, measure) -> Arrays:
    from .errors import InputError

    yi, vi, _ = sel.effect_sizes(measure)
    ids = sel.study_ids
    ok = np.isfinite(yi) & np.isfinite(vi)
    dropped = [{"study_id": s, "reason": "no finite log ratio (double zero)"} for s, good in zip(ids, ok) if not good]
    if not ok.any():
        raise InputError(f"no study has a finite log {measure} for the normal model")
    return Arrays({"y": yi[ok], "s": np.sqrt(vi[ok])}, [s for s, good in zip(ids, ok) if good], dropped)


def _normal_approximation(a: dict) -> dict:
    return {"approx_y": np.asarray(a["y"], dtype=float), "approx_prec": 1 / np.asarray(a["s"], dtype=float) ** 2}


def _normal_observed(a: dict, pad: int) -> dict:
    return {"y_obs": np.concatenate([np.asarray(a["y"], dtype=float), np.zeros(pad)]),
            "se": np.concatenate([np.asarray(a["s"], dtype=float), np.full(pad, PAD_SE)])}


def _normal_likelihood(pm, d, theta, alpha) -> None:
    pm.Normal("y", mu=theta, sigma=d["se"], observed=d["y_obs"], dims="study")


def _normal_pointwise(a: dict, post: dict, rng: np.random.Generator):
    from scipy import stats

    y, s = np.asarray(a["y"], dtype=float), np.asarray(a["s"], dtype=float)
    theta = post["theta"]
    return (stats.norm.logpdf(y, theta, s), {"y": (DRAWS, rng.normal(theta, s))}, {"y": (STUDY, y)},
            {"se": (STUDY, s)})


MODEL_KINDS: dict[str, ModelKind] = {k.name: k for k in (
    ModelKind("contrast", arms="two", measures=("OR",), estimand="ratio", control_risk="draws",
              baseline_prior=True, exact=False, binomial=True, reference_method="REML",
              prepare=_contrast_prepare, approximation=_contrast_approximation, observed=_contrast_observed,
              likelihood=_contrast_likelihood, pointwise=_contrast_pointwise, reads_estimates=True),
    ModelKind("proportion", arms="one", measures=("PLO",), estimand="rate", control_risk=None,
              baseline_prior=False, exact=False, binomial=True, reference_method="GLMM",
              prepare=_proportion_prepare, approximation=_proportion_approximation, observed=_proportion_observed,
              likelihood=_proportion_likelihood, pointwise=_proportion_pointwise, tau_scale="logit event rates",
              default_tau_prior="halfnormal(1)", turner_priors=False,
              sensitivity_tau_priors=("halfnormal(0.5)", "halfnormal(1)", "halfnormal(2)", "halfcauchy(1)")),
    ModelKind("normal", arms="two", measures=("OR", "RR"), estimand="ratio", control_risk="observed",
              baseline_prior=False, exact=True, binomial=False, reference_method="REML",
              prepare=_normal_prepare, approximation=_normal_approximation, observed=_normal_observed,
              likelihood=_normal_likelihood, pointwise=_normal_pointwise, tau_scale="log ratios",
              reads_estimates=True, pad_log_lik=-math.log(PAD_SE) - 0.5 * math.log(2 * math.pi)),
)}


def get(name: str) -> ModelKind:
    """The registry entry of a model kind; InputError naming the choices for an unknown one."""
    try:
        return MODEL_KINDS[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; choose from {', '.join(MODEL_KINDS)}") from None
