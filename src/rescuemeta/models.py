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


def padded_size(k: int, minimum: int = 16) -> int:
    """The compiled size for ``k`` studies: the next power of two, at least ``minimum``.

    Models are compiled for a padded number of studies so that analyses with 1 to 16 studies (every outcome
    of the rescue-stenting data) share one compiled model per kind and prior families. Padded studies have
    no data (binomial: n = 0 events of 0; normal: s = 1e8), contribute nothing to the likelihood, and are
    removed from the results by :mod:`rescuemeta.sampling`.
    """
    size = minimum
    while size < k:
        size *= 2
    return size


# The compiled (nutpie) form of the proportion model is the contrast graph with the study baselines switched
# off (``use_baseline`` = 0, no control arms): logit p_treat,i = theta_i exactly, and alpha_i only follows its
# prior (it is dropped from the results). One compiled model then serves both kinds: half the compile time.
SHARED_BINOMIAL_BASELINE = "normal(0, 10)"


def structure_key(kind: str, k: int, tau_prior: Prior, effect_prior: Prior, baseline_prior: Prior | None,
                  shared_binomial: bool = False) -> tuple:
    """What fixes the compiled graph: the model kind, the (padded) size, and the prior *families* (not their
    values). With ``shared_binomial``, contrast and proportion share one key (see SHARED_BINOMIAL_BASELINE)."""
    if shared_binomial and kind in ("contrast", "proportion"):
        fam = baseline_prior.family if (baseline_prior is not None and kind == "contrast") else "normal"
        return ("binomial", k, tau_prior.family, effect_prior.family, fam)
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


PAD_SE = 1e8  # standard error given to padded studies of the normal model (likelihood gradient ~1e-16)


def observed_data(data: ModelData, size: int | None = None, shared_binomial: bool = False) -> dict:
    """The ``pm.Data`` values holding the observations, padded to ``size`` studies."""
    size = data.k if size is None else size
    pad = size - data.k
    if pad < 0:
        raise ValueError(f"cannot pad {data.k} studies to {size}")
    a = data.arrays

    def ints(x):
        return np.concatenate([np.asarray(x, dtype="int64"), np.zeros(pad, dtype="int64")])

    if data.kind == "contrast":
        d = {"events_treat": ints(a["ai"]), "n_treat": ints(a["n1i"]), "events_control": ints(a["ci"]),
             "n_control": ints(a["n2i"])}
        return {**d, "use_baseline": np.array(1.0)} if shared_binomial else d
    if data.kind == "proportion":
        d = {"events_treat": ints(a["ai"]), "n_treat": ints(a["n1i"])}
        if shared_binomial:
            zeros = np.zeros(size, dtype="int64")
            d.update(events_control=zeros, n_control=zeros.copy(), use_baseline=np.array(0.0))
        return d
    return {"y_obs": np.concatenate([np.asarray(a["y"], dtype=float), np.zeros(pad)]),
            "se": np.concatenate([np.asarray(a["s"], dtype=float), np.full(pad, PAD_SE)])}


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


def _location(name: str, prior: Prior, par, dims=None):
    if prior.family == "normal":
        return pm.Normal(name, mu=par[0], sigma=par[1], dims=dims)
    if prior.family == "student_t":
        return pm.StudentT(name, nu=par[0], mu=par[1], sigma=par[2], dims=dims)
    raise ValueError(f"no PyMC form for effect prior family {prior.family!r}")  # pragma: no cover


def build_model(data: ModelData, tau_prior: Prior, effect_prior: Prior, baseline_prior: Prior | None = None,
                size: int | None = None, shared_binomial: bool = False) -> pm.Model:
    """Build the PyMC model.

    Parameters
    ----------
    data : ModelData
    tau_prior, effect_prior, baseline_prior : Prior
        ``baseline_prior`` is used by ``contrast`` only.
    size : int, optional
        Number of studies to compile for (``>= data.k``; see :func:`padded_size`); default ``data.k``.
    shared_binomial : bool
        Build ``contrast`` and ``proportion`` as one graph (see SHARED_BINOMIAL_BASELINE).

    Returns
    -------
    pymc.Model
        Free variables ``mu``, ``tau`` (or ``tau2``), ``z`` (and ``alpha`` for ``contrast``); observed
        ``y_treat`` (+ ``y_control``) or ``y``; deterministic ``theta`` (study effects). Observations and prior
        parameters are ``pm.Data``, so both can be swapped without recompiling.
    """
    kind = data.kind
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model {kind!r}; choose from {', '.join(MODEL_KINDS)}")
    size = data.k if size is None else size
    shared = shared_binomial and kind in ("contrast", "proportion")
    if shared and kind == "proportion":
        from .priors import parse

        baseline_prior = parse(SHARED_BINOMIAL_BASELINE, "effect")
    pdat = prior_data(tau_prior, effect_prior, baseline_prior if (kind == "contrast" or shared) else None)
    obs = observed_data(data, size, shared_binomial=shared)
    with pm.Model(coords={"study": np.arange(size)}) as model:
        tau_par = pm.Data("tau_par", pdat["tau_par"])
        mu_par = pm.Data("mu_par", pdat["mu_par"])
        mu = _location("mu", effect_prior, mu_par)
        tau = _tau(tau_prior, tau_par)
        z = pm.Normal("z", 0.0, 1.0, dims="study")
        theta = pm.Deterministic("theta", mu + tau * z, dims="study")
        d = {name: pm.Data(name, value, dims="study" if np.ndim(value) else None) for name, value in obs.items()}
        if shared:
            alpha_par = pm.Data("alpha_par", pdat["alpha_par"])
            alpha = _location("alpha", baseline_prior, alpha_par, dims="study")
            pm.Binomial("y_control", n=d["n_control"], logit_p=alpha, observed=d["events_control"], dims="study")
            pm.Binomial("y_treat", n=d["n_treat"], logit_p=d["use_baseline"] * alpha + theta,
                        observed=d["events_treat"], dims="study")
        elif kind == "contrast":
            alpha_par = pm.Data("alpha_par", pdat["alpha_par"])
            alpha = _location("alpha", baseline_prior, alpha_par, dims="study")
            pm.Binomial("y_control", n=d["n_control"], logit_p=alpha, observed=d["events_control"], dims="study")
            pm.Binomial("y_treat", n=d["n_treat"], logit_p=alpha + theta, observed=d["events_treat"], dims="study")
        elif kind == "proportion":
            pm.Binomial("y_treat", n=d["n_treat"], logit_p=theta, observed=d["events_treat"], dims="study")
        else:
            pm.Normal("y", mu=theta, sigma=d["se"], observed=d["y_obs"], dims="study")
    return model
