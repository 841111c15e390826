"""The models stage: PyMC hierarchical models (non-centred), one per outcome.

* ``contrast`` (two arms, exact binomial likelihood; Smith, Spiegelhalter & Thomas 1995):
  logit p_control,i = alpha_i, logit p_treat,i = alpha_i + theta_i, theta_i = mu + tau z_i, z_i ~ N(0, 1);
  alpha_i ~ baseline prior; ``mu`` is the pooled log odds ratio.
* ``proportion`` (one arm): logit p_i = mu + tau z_i.
* ``normal``: y_i ~ N(mu + tau z_i, s_i^2) on study log OR / log RR.

Prior parameters enter as ``pm.Data``: a model compiled once per *structure* (model kind, prior
families, number of studies) can be re-used for other prior parameters and other counts of the same
shape without recompiling (see :mod:`rescuemeta.sampling`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymc as pm

from .priors import Prior

MODEL_KINDS = ("contrast", "proportion", "normal")


@dataclass(frozen=True)
class ModelData:
    """Arrays a model is built from. ``contrast``: ai, n1i, ci, n2i; ``proportion``: ai, n1i;
    ``normal``: y, s."""

    kind: str
    arrays: dict

    @property
    def k(self) -> int:
        return len(next(iter(self.arrays.values())))


def structure_key(kind: str, k: int, tau_prior: Prior, effect_prior: Prior, baseline_prior: Prior | None) -> tuple:
    """What fixes the compiled graph: the model kind, k, and the prior *families* (not their values)."""
    return (kind, k, tau_prior.family, effect_prior.family,
            baseline_prior.family if (baseline_prior is not None and kind == "contrast") else None)


def prior_data(tau_prior: Prior, effect_prior: Prior, baseline_prior: Prior | None) -> dict:
    """Values of the ``pm.Data`` prior parameters (padded to fixed lengths)."""
    d = {"tau_par": np.array(list(tau_prior.params) + [0.0] * (2 - len(tau_prior.params)), dtype=float),
         "mu_par": np.array(list(effect_prior.params) + [0.0] * (3 - len(effect_prior.params)), dtype=float)}
    if baseline_prior is not None:
        d["alpha_par"] = np.array(list(baseline_prior.params) + [0.0] * (3 - len(baseline_prior.params)),
                                  dtype=float)
    return d


def _tau(tau_prior: Prior, par):
    f = tau_prior.family
    if f == "halfnormal":
        return pm.HalfNormal("tau", sigma=par[0])
    if f == "halfcauchy":
        return pm.HalfCauchy("tau", beta=par[0])
    if f == "halft":
        return pm.HalfStudentT("tau", nu=par[0], sigma=par[1])
    if f == "exponential":
        return pm.Exponential("tau", lam=par[0])
    if f == "uniform":
        return pm.Uniform("tau", lower=par[0], upper=par[1])
    if f == "lognormal":
        return pm.LogNormal("tau", mu=par[0], sigma=par[1])
    if f == "invgamma":  # on tau^2
        tau2 = pm.InverseGamma("tau2", alpha=par[0], beta=par[1])
        return pm.Deterministic("tau", pm.math.sqrt(tau2))
    if f == "lognormal2":  # Turner: on tau^2
        tau2 = pm.LogNormal("tau2", mu=par[0], sigma=par[1])
        return pm.Deterministic("tau", pm.math.sqrt(tau2))
    raise ValueError(f"no PyMC form for tau prior family {f!r}")  # pragma: no cover


def _location(name: str, prior: Prior, par, shape=None):
    if prior.family == "normal":
        return pm.Normal(name, mu=par[0], sigma=par[1], shape=shape)
    if prior.family == "student_t":
        return pm.StudentT(name, nu=par[0], mu=par[1], sigma=par[2], shape=shape)
    raise ValueError(f"no PyMC form for effect prior family {prior.family!r}")  # pragma: no cover


def build_model(data: ModelData, tau_prior: Prior, effect_prior: Prior, baseline_prior: Prior | None = None) -> pm.Model:
    """Build the PyMC model.

    Returns
    -------
    pymc.Model
        Free variables ``mu``, ``tau`` (or ``tau2``), ``z`` (and ``alpha`` for ``contrast``); observed
        ``y_treat`` (+ ``y_control``) or ``y``; deterministic ``theta`` (study effects).
    """
    kind = data.kind
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model {kind!r}; choose from {', '.join(MODEL_KINDS)}")
    k = data.k
    pdat = prior_data(tau_prior, effect_prior, baseline_prior if kind == "contrast" else None)
    with pm.Model(coords={"study": np.arange(k)}) as model:
        tau_par = pm.Data("tau_par", pdat["tau_par"])
        mu_par = pm.Data("mu_par", pdat["mu_par"])
        mu = _location("mu", effect_prior, mu_par)
        tau = _tau(tau_prior, tau_par)
        z = pm.Normal("z", 0.0, 1.0, dims="study")
        theta = pm.Deterministic("theta", mu + tau * z, dims="study")
        a = data.arrays
        if kind == "contrast":
            alpha_par = pm.Data("alpha_par", pdat["alpha_par"])
            alpha = _location("alpha", baseline_prior, alpha_par, shape=k)
            n1 = pm.Data("n_treat", np.asarray(a["n1i"], dtype="int64"))
            n2 = pm.Data("n_control", np.asarray(a["n2i"], dtype="int64"))
            pm.Binomial("y_control", n=n2, logit_p=alpha, observed=np.asarray(a["ci"], dtype="int64"), dims="study")
            pm.Binomial("y_treat", n=n1, logit_p=alpha + theta, observed=np.asarray(a["ai"], dtype="int64"),
                        dims="study")
        elif kind == "proportion":
            n1 = pm.Data("n_treat", np.asarray(a["n1i"], dtype="int64"))
            pm.Binomial("y_treat", n=n1, logit_p=theta, observed=np.asarray(a["ai"], dtype="int64"), dims="study")
        else:
            s = pm.Data("se", np.asarray(a["s"], dtype=float))
            pm.Normal("y", mu=theta, sigma=s, observed=np.asarray(a["y"], dtype=float), dims="study")
    return model
