"""The models stage: the PyMC hierarchical model of each model kind (:mod:`rescuemeta.kinds`: contrast,
proportion, normal; their likelihoods and data live in that registry), with the parameterisation below.

The sampler sees a parameterisation chosen to be well conditioned from very weak to very informative data
(see :func:`build_model`): each theta_i is standardised by its conditional posterior given (mu, tau) under a
normal approximation of its study's likelihood, and the baseline alpha_i is replaced by a combination that the
likelihood makes independent of theta_i. Both are exact reparameterisations: the posterior is that of the
model above, whatever the quality of the approximation; only the sampler's efficiency depends on it.

Prior parameters enter as ``pm.Data``: a model compiled once per *structure* (model kind, prior
families, number of studies) can be re-used for other prior parameters and other counts of the same
shape without recompiling (see :mod:`rescuemeta.sampling`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import kinds
from .kinds import MODEL_KINDS, PAD_SE
from .priors import Prior

if TYPE_CHECKING:
    import pymc

__all__ = ["MODEL_KINDS", "PAD_SE", "ModelData", "approximation", "build_model", "observed_data", "padded_coefs",
           "padded_size",
           "prior_data", "structure_key"]


@dataclass(frozen=True)
class ModelData:
    """Arrays a model is built from. ``contrast``: ai, n1i, ci, n2i; ``proportion``: ai, n1i;
    ``normal``: y, s."""

    kind: str
    arrays: dict
    hierarchical_baselines: bool = False  # contrast: alpha_i ~ N(m, s^2) instead of independent baselines
    X: np.ndarray | None = None  # meta-regression: the (centred) design, column 0 the intercept

    @property
    def k(self) -> int:
        return len(next(iter(self.arrays.values())))


def padded_size(k: int, minimum: int = 16) -> int:
    """The compiled size for ``k`` studies: the next power of two, at least ``minimum``.

    Models are compiled for a padded number of studies so that analyses with 1 to 16 studies (every outcome
    of a typical meta-analysis) share one compiled model per kind and prior families. Padded studies have
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
# Hierarchical baselines (Warn, Thompson & Spiegelhalter 2002): alpha_i ~ N(m, s^2), m ~ the baseline prior,
# s ~ half-normal(HIERARCHICAL_BASELINE_SD): the proportion model's default tau prior, as s is also the SD of
# logit event rates across studies.
HIERARCHICAL_BASELINE_SD = 1.0
SHARED_BINOMIAL_LIKELIHOOD = kinds.MODEL_KINDS["contrast"].likelihood  # the graph the binomial kinds share


# The shared binomial graph also carries the meta-regression (issue 19: one cold compile for every binomial fit of
# an analysis, moderated or not). A fit without moderators sets its ``mods_x`` to 0: the slopes then follow
# SHARED_COEF_PRIOR only, leave the likelihood and every other parameter's posterior unchanged, and are dropped
# from the results, like the padded studies.
SHARED_COEF_PRIOR = "normal(0, 1)"


def padded_coefs(p: int, minimum: int = 4) -> int:
    """The compiled number of meta-regression coefficients for ``p``: the next power of two, at least
    ``minimum``, so that analyses with 1 to 3 moderator columns share one compiled model. Padded columns are 0
    for every study: their coefficients follow their prior only and are dropped from the results."""
    size = minimum
    while size < p:
        size *= 2
    return size


def extras(data: ModelData) -> tuple[str, ...]:
    """The optional parts of the contrast graph a fit needs: ``bias`` (the bias model on non-randomised rows)
    makes a graph of its own. (Rows with a reported log OR do not: every binomial graph carries ``est_y``,
    ``est_s`` and ``est_mask``, the mask 0 where a row is analysed by its counts.)"""
    return ("bias",) if "bias_var" in data.arrays else ()  # reported rows need no graph of their own


def structure_key(kind: str, k: int, tau_prior: Prior, effect_prior: Prior, baseline_prior: Prior | None,
                  shared_binomial: bool = False, hierarchical_baselines: bool = False, n_coef: int = 0,
                  coef_prior: Prior | None = None, extra: tuple[str, ...] = ()) -> tuple:
    """What fixes the compiled graph: the model kind, the (padded) size, and the prior *families* (not their
    values). With ``shared_binomial``, contrast and proportion share one key (see SHARED_BINOMIAL_BASELINE);
    hierarchical baselines are a graph of their own, and so is each combination of :func:`extras`."""
    if extra:
        return (*structure_key(kind, k, tau_prior, effect_prior, baseline_prior, False, hierarchical_baselines,
                               n_coef, coef_prior), "extras", *extra)
    mk = kinds.get(kind)
    own_baseline = baseline_prior.family if (baseline_prior is not None and mk.baseline_prior) else None
    tau_key = tau_graph(tau_prior)
    if shared_binomial and mk.binomial and not hierarchical_baselines:  # with the regression (SHARED_COEF_PRIOR)
        return ("binomial", k, tau_key, effect_prior.family, own_baseline or "normal", "coef",
                n_coef or padded_coefs(1), coef_prior.family if coef_prior else "normal")
    if n_coef:  # a meta-regression: its own graph per number of coefficients and coefficient prior family
        return (kind, "regression", n_coef, coef_prior.family if coef_prior else None, hierarchical_baselines, k,
                tau_key, effect_prior.family, own_baseline)
    if hierarchical_baselines:
        return (kind, "hierarchical-baselines", k, tau_key, effect_prior.family, own_baseline)
    if shared_binomial and mk.binomial:
        return ("binomial", k, tau_key, effect_prior.family, own_baseline or "normal")
    return (kind, k, tau_key, effect_prior.family, own_baseline)


def prior_data(tau_prior: Prior, effect_prior: Prior, baseline_prior: Prior | None,
               hierarchical_baselines: bool = False, coef_prior: Prior | None = None) -> dict:
    """Values of the ``pm.Data`` prior parameters (padded to fixed lengths); with hierarchical baselines also
    the half-normal scale of their SD (``alpha_sd_par``)."""
    d = {**_tau_data(tau_prior),
         "mu_par": np.array(list(effect_prior.params) + [0.0] * (3 - len(effect_prior.params)), dtype=float)}
    if baseline_prior is not None:
        d["alpha_par"] = np.array(list(baseline_prior.params) + [0.0] * (3 - len(baseline_prior.params)),
                                  dtype=float)
    if hierarchical_baselines:
        d["alpha_sd_par"] = np.array(HIERARCHICAL_BASELINE_SD)
    if coef_prior is not None:
        d["coef_par"] = np.array(list(coef_prior.params) + [0.0] * (3 - len(coef_prior.params)), dtype=float)
    return d


def approximation(data: ModelData) -> dict:
    """A normal approximation of each study's likelihood, used only to parameterise the sampler (the kind's
    :attr:`rescuemeta.kinds.ModelKind.approximation`).

    Returns
    -------
    dict of ndarray
        ``approx_y``, ``approx_prec``: the study effect's estimate and precision on the model scale (log OR
        with 1/2 added to every cell, logit rate likewise, or ``y`` and ``1/s^2`` for the normal model);
        ``base_shift`` c_i and ``base_center``: the baseline combination b_i = alpha_i + c_i theta_i that the
        approximate likelihood makes independent of theta_i (c_i = v_control / (v_control + v_treat)), and its
        estimate. Single-arm data have c_i = 0 and centre 0.
    """
    return kinds.get(data.kind).approximation(data.arrays)


def observed_data(data: ModelData, size: int | None = None, shared_binomial: bool = False,
                  n_coef: int | None = None) -> dict:
    """The ``pm.Data`` values holding the observations and their normal approximation (:func:`approximation`),
    padded to ``size`` studies (padded studies: no data, precision 0). In the shared binomial graph a kind
    without control arms gets empty ones and ``use_baseline`` 0."""
    size = data.k if size is None else size
    pad = size - data.k
    if pad < 0:
        raise ValueError(f"cannot pad {data.k} studies to {size}")
    mk = kinds.get(data.kind)
    baselines = mk.baseline_prior or (shared_binomial and mk.binomial)  # a graph with study baselines
    approx = {name: np.concatenate([v, np.zeros(pad)]) for name, v in approximation(data).items()
              if (name != "base_prec" or data.hierarchical_baselines)  # only hierarchical baselines use it
              and (baselines or not name.startswith("base_"))}
    d = {**mk.observed(data.arrays, pad), **approx}
    if data.X is not None:  # meta-regression: the moderator columns (the intercept is mu), padded studies 0
        x = np.vstack([np.asarray(data.X, dtype=float)[:, 1:], np.zeros((pad, data.X.shape[1] - 1))])
        n_coef = data.X.shape[1] if n_coef is None else n_coef
        d["mods_x"] = np.hstack([x, np.zeros((size, n_coef - data.X.shape[1]))])  # padded columns: 0
    elif n_coef:  # the shared binomial graph without moderators: every column 0
        d["mods_x"] = np.zeros((size, n_coef - 1))
    if shared_binomial and mk.binomial:
        if mk.baseline_prior:
            d["use_baseline"] = np.array(1.0)
        else:
            zeros = np.zeros(size, dtype="int64")
            d.update(events_control=zeros, n_control=zeros.copy(), use_baseline=np.array(0.0),
                     est_y=np.zeros(size), est_s=np.ones(size), est_mask=np.zeros(size))
    return d


# Tau-prior families compiled into one graph: tau = exp(tau_log__) with tau_log__ flat and the prior's log density
# (plus the log-Jacobian log tau) a potential, the family chosen by a one-hot ``pm.Data`` vector. The sampler sees
# log tau, as PyMC's log transform gives it for each of these families on its own (on tau^2 for invgamma and
# lognormal2: a linear change of scale), so a grid over families costs what a grid over scales costs. uniform(a, b)
# keeps a graph of its own: its density has hard walls, which PyMC's interval transform removes and a log scale
# would not.
SHARED_TAU_FAMILIES = ("halfnormal", "halfcauchy", "halft", "exponential", "lognormal", "invgamma", "lognormal2")
_SAFE_TAU_PAR = 1.0  # parameters of the families not selected: finite densities and gradients (weight 0)


def tau_graph(tau_prior: Prior) -> str:
    """The compiled-graph key of a tau prior: ``shared`` for :data:`SHARED_TAU_FAMILIES`, else its family."""
    return "shared" if tau_prior.family in SHARED_TAU_FAMILIES else tau_prior.family


def _tau_data(tau_prior: Prior) -> dict:
    if tau_graph(tau_prior) != "shared":
        return {"tau_par": np.array(list(tau_prior.params) + [0.0] * (2 - len(tau_prior.params)), dtype=float)}
    par = np.full((len(SHARED_TAU_FAMILIES), 2), _SAFE_TAU_PAR)
    i = SHARED_TAU_FAMILIES.index(tau_prior.family)
    par[i, : len(tau_prior.params)] = tau_prior.params
    onehot = np.zeros(len(SHARED_TAU_FAMILIES))
    onehot[i] = 1.0
    # the normalising constant, from the prior's own (scipy) density at tau = 1, where the kernel's log tau is 0
    const = float(tau_prior.logpdf(np.array(1.0))) - float(_tau_kernel(tau_prior.family, 1.0, 0.0, par[i], np))
    return {"tau_par": par, "tau_family": onehot, "tau_const": np.array(const)}


def _tau_kernel(f: str, tau, log_tau, p, m):
    """log p(tau) of family ``f`` (parameters ``p``) up to a constant that depends on ``p`` only; ``m`` is numpy or
    ``pytensor.tensor``. The constant is ``tau_const`` (:func:`_tau_data`), so that the graph holds only these few
    terms (issue 19: a smaller graph compiles faster than PyMC's ``logp`` of seven distributions with their
    parameter checks). Priors on tau^2 include the Jacobian 2 tau (its log 2 in the constant)."""
    if f == "halfnormal":
        return -0.5 * (tau / p[0]) ** 2
    if f == "halfcauchy":
        return -m.log1p((tau / p[0]) ** 2)
    if f == "halft":
        return -0.5 * (p[0] + 1.0) * m.log1p((tau / p[1]) ** 2 / p[0])
    if f == "exponential":
        return -p[0] * tau
    if f == "lognormal":
        return -log_tau - 0.5 * ((log_tau - p[0]) / p[1]) ** 2
    if f == "invgamma":  # tau^2 ~ InvGamma(a, b): -(a + 1) log tau^2 - b / tau^2, + log tau (Jacobian)
        return -(2.0 * p[0] + 1.0) * log_tau - p[1] / tau**2
    if f == "lognormal2":  # log tau^2 ~ N(m, s^2): -log tau^2 - (log tau^2 - m)^2 / 2 s^2, + log tau (Jacobian)
        return -log_tau - 0.5 * ((2.0 * log_tau - p[0]) / p[1]) ** 2
    raise ValueError(f)


def _tau(tau_prior: Prior, par, family=None, const=None):
    """The PyMC variable ``tau``: for :data:`SHARED_TAU_FAMILIES` the shared form (``family``: the one-hot
    ``pm.Data``, ``const``: the selected family's normalising constant), else the prior family's own variable
    (:data:`rescuemeta.priors.FAMILIES`)."""
    import pymc as pm
    import pytensor.tensor as pt

    if family is None:
        return tau_prior.definition.pymc(pm, par)
    log_tau = pm.Flat("tau_log__")
    tau = pm.Deterministic("tau", pm.math.exp(log_tau))
    # a family not selected sees log tau = 0 (weight 0): finite whatever tau, so no 0 * inf in the density or its
    # gradient
    logp = const
    for i, f in enumerate(SHARED_TAU_FAMILIES):
        lt = family[i] * log_tau
        logp = logp + family[i] * _tau_kernel(f, pt.exp(lt), lt, par[i], pt)
    pm.Potential("tau_prior", logp + log_tau)  # + log-Jacobian of tau = exp(tau_log__)
    return tau


def build_model(data: ModelData, tau_prior: Prior, effect_prior: Prior, baseline_prior: Prior | None = None,
                size: int | None = None, shared_binomial: bool = False, coef_prior: Prior | None = None,
                n_coef: int | None = None) -> pymc.Model:
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
        Free variables ``tau`` (or ``tau2``), ``u``, ``z`` (and ``b`` for ``contrast``; see
        :func:`_pooled_effect`, :func:`_study_effects` and :func:`_baselines`); observed ``y_treat``
        (+ ``y_control``) or ``y``; deterministic ``mu``, ``theta`` (study effects) and ``alpha`` (baselines).
        Observations and prior parameters are ``pm.Data``, so both can be swapped without recompiling.
    """
    import pymc as pm

    mk = kinds.get(data.kind)
    size = data.k if size is None else size
    shared = shared_binomial and mk.binomial
    if shared and not mk.baseline_prior:
        from .priors import parse

        baseline_prior = parse(SHARED_BINOMIAL_BASELINE, "effect")
    hier = data.hierarchical_baselines
    reg = data.X is not None
    if hier or extras(data):
        shared = False
    if reg and coef_prior is None:
        raise ValueError("a meta-regression model needs a coefficient prior")
    if shared:  # the shared binomial graph carries the regression, with or without moderators
        if coef_prior is None or not reg:
            from .priors import parse

            coef_prior = parse(SHARED_COEF_PRIOR, "effect")
        n_coef = n_coef or padded_coefs(data.X.shape[1] if data.X is not None else 1)
        reg = True
    pdat = prior_data(tau_prior, effect_prior, baseline_prior if (mk.baseline_prior or shared) else None, hier,
                      coef_prior if reg else None)
    n_coef = (n_coef or (data.X.shape[1] if data.X is not None else 0)) if reg else 0
    obs = observed_data(data, size, shared_binomial=shared, n_coef=n_coef or None)
    coords = {"study": np.arange(size)}
    if reg:
        coords["coef"] = np.arange(n_coef)
        coords["slope"] = np.arange(n_coef - 1)
    with pm.Model(coords=coords) as model:
        tau_par = pm.Data("tau_par", pdat["tau_par"])
        mu_par = pm.Data("mu_par", pdat["mu_par"])
        shared_tau = "tau_family" in pdat
        tau = _tau(tau_prior, tau_par, pm.Data("tau_family", pdat["tau_family"]) if shared_tau else None,
                   pm.Data("tau_const", pdat["tau_const"]) if shared_tau else None)
        d = {name: pm.Data(name, value, dims=("study" if np.ndim(value) == 1 else ("study", "slope") if name ==
                                              "mods_x" else None)) for name, value in obs.items()}
        shift = 0.0
        if reg:
            assert coef_prior is not None
            coef_par = pm.Data("coef_par", pdat["coef_par"])
            slopes = pm.Flat("slopes", dims="slope")  # the moderators' coefficients, with their prior as a potential
            pm.Potential("coef_prior", pm.math.sum(pm.logp(_location_dist(coef_prior, coef_par), slopes)))
            shift = pm.math.dot(d["mods_x"], slopes)  # x_i' beta without the intercept
        if "bias_var" in d:  # bias model: theta_i (the study's observed-scale effect) ~ N(mu + m_i, tau^2 + s_i^2)
            bm, bv = d["bias_mean"], d["bias_var"]
            prec_eff = d["approx_prec"] / (1.0 + bv * d["approx_prec"])
            mu = _pooled_effect(tau, effect_prior, mu_par, d["approx_y"] - shift - bm, prec_eff)
            tau_i = pm.math.sqrt(tau**2 + bv)
            bias_shift = bm
        else:
            mu = _pooled_effect(tau, effect_prior, mu_par, d["approx_y"] - shift, d["approx_prec"])
            tau_i, bias_shift = tau, 0.0
        if reg:
            pm.Deterministic("beta", pm.math.concatenate([pm.math.stack([mu]), slopes]), dims="coef")
        theta = _study_effects(mu + shift + bias_shift, tau_i, d["approx_y"], d["approx_prec"])
        alpha = None
        if shared or mk.baseline_prior:
            assert baseline_prior is not None, f"the {mk.name} model needs a baseline prior"
            alpha_par = pm.Data("alpha_par", pdat["alpha_par"])
            sd_par = pm.Data("alpha_sd_par", pdat["alpha_sd_par"]) if hier else None
            alpha = _baselines(theta, baseline_prior, alpha_par, d["base_shift"], d["base_center"], sd_par,
                               d.get("base_prec"))  # (shared and baseline kinds carry base_*)
        likelihood = SHARED_BINOMIAL_LIKELIHOOD if shared else mk.likelihood
        likelihood(pm, d, theta, alpha)
    return model


def _pooled_effect(tau, prior: Prior, par, y_hat, prec):
    """mu ~ ``prior``, parameterised by u = (mu - m) / s, where m and s^2 are the mean and variance of mu given tau
    under the normal approximation of the likelihood (and a normal proxy of the prior with its location and
    scale): 1/s^2 = 1/scale^2 + sum_i W_i, m = s^2 (loc/scale^2 + sum_i W_i y_hat_i), W_i = prec_i/(1 + tau^2 prec_i).
    With few studies mu's posterior scale grows with tau (the (mu, tau) funnel); standardised, it does not.
    The density of u is the prior's density of mu times the Jacobian s (a potential on a flat u): exact."""
    import pymc as pm

    assert prior.definition.location_scale is not None, f"{prior.spec} is not a location-scale effect prior"
    loc_i, scale_i = prior.definition.location_scale
    w = prec / (1.0 + tau**2 * prec)
    precision = 1.0 / par[scale_i] ** 2 + pm.math.sum(w)
    sd = 1.0 / pm.math.sqrt(precision)
    u = pm.Flat("u")
    mu = pm.Deterministic("mu", (par[loc_i] / par[scale_i] ** 2 + pm.math.sum(w * y_hat)) / precision + sd * u)
    pm.Potential("mu_prior", pm.logp(_location_dist(prior, par), mu) + pm.math.log(sd))
    return mu


def _study_effects(mu, tau, y_hat, prec):
    """theta_i ~ N(mu, tau^2), parameterised by z_i = (theta_i - m_i) / s_i, where m_i and s_i^2 are the mean and
    variance of theta_i given (mu, tau) under the normal approximation N(y_hat_i, 1/prec_i) of its likelihood:

        s_i^2 = tau^2 / (1 + tau^2 prec_i),   m_i = (mu + tau^2 prec_i y_hat_i) / (1 + tau^2 prec_i).

    For weak data (tau^2 prec_i -> 0) this is the non-centred form theta_i = mu + tau z_i; for very informative
    data (tau^2 prec_i >> 1) it is centred on the data, theta_i ~ y_hat_i + z_i / sqrt(prec_i), and it moves
    between the two with tau itself, so neither the funnel at small tau (centred) nor the narrow curved ridge
    at large tau (non-centred) appears. For a normal likelihood z is a posteriori N(0, 1) independent of
    (mu, tau). The density of z is N(theta_i | mu, tau^2) times the Jacobian s_i (a potential on a flat z),
    so the posterior is exactly the model's.
    """
    import pymc as pm

    z = pm.Flat("z", dims="study")
    t2 = tau**2
    denom = 1.0 + t2 * prec
    root = pm.math.sqrt(denom)
    theta = pm.Deterministic("theta", (mu + t2 * prec * y_hat) / denom + tau / root * z, dims="study")
    r = tau * prec * (y_hat - mu) / denom + z / root  # (theta_i - mu) / tau, without dividing by tau
    pm.Potential("theta_prior", pm.math.sum(-0.5 * r**2 - 0.5 * pm.math.log(denom) - 0.5 * np.log(2 * np.pi)))
    return theta


def _baselines(theta, prior: Prior, par, shift, center, sd_par=None, base_prec=None):
    """alpha_i ~ ``prior``, sampled as b_i = alpha_i + c_i theta_i - centre_i (flat, with alpha's prior density
    as a potential; the map (b, theta) -> (alpha, theta) has Jacobian 1). With c_i from the normal
    approximation, the likelihood makes b_i and theta_i independent: a large study no longer ties its
    baseline and its effect into a narrow diagonal ridge.

    With ``sd_par`` the baselines are hierarchical: alpha_i ~ N(alpha_mu, alpha_sigma^2), alpha_mu ~ ``prior``
    (a flat variable with the prior's density as a potential), alpha_sigma ~ half-normal(``sd_par``). Then alpha_i
    is standardised by its conditional posterior given (theta_i, alpha_mu, alpha_sigma) under the normal
    approximation of both arms (precision P_i = ``base_prec``, mean y_i = centre_i - c_i theta_i), as theta_i is
    in :func:`_study_effects`: with s = alpha_sigma, alpha_i = (m + s^2 P_i y_i) / (1 + s^2 P_i) + s / sqrt(1 + s^2
    P_i) b_i. Non-centred where the data are weak (padded studies: P_i = 0), centred on the data where they are
    strong; exact, the density of b_i being N(alpha_i | m, s^2) times the Jacobian."""
    import pymc as pm

    b = pm.Flat("b", dims="study")
    if sd_par is None:
        alpha = pm.Deterministic("alpha", b + center - shift * theta, dims="study")
        pm.Potential("alpha_prior", pm.math.sum(pm.logp(_location_dist(prior, par), alpha)))
        return alpha
    m = pm.Flat("alpha_mu")
    pm.Potential("alpha_mu_prior", pm.logp(_location_dist(prior, par), m))
    sd = pm.HalfNormal("alpha_sigma", sigma=sd_par)
    y = center - shift * theta
    s2p = sd**2 * base_prec
    denom = 1.0 + s2p
    root = pm.math.sqrt(denom)
    alpha = pm.Deterministic("alpha", (m + s2p * y) / denom + sd / root * b, dims="study")
    r = sd * base_prec * (y - m) / denom + b / root  # (alpha_i - m) / s, without dividing by s
    pm.Potential("alpha_prior", pm.math.sum(-0.5 * r**2 - 0.5 * pm.math.log(denom) - 0.5 * np.log(2 * np.pi)))
    return alpha


def _location_dist(prior: Prior, par):
    import pymc as pm

    return prior.definition.pymc(pm, par)
