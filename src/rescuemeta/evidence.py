"""Marginal likelihoods of the sampled models by bridge sampling, and the Bayes factors built from them.

The estimator is that of Meng & Wong (1996) as implemented in the R package bridgesampling (Gronau et al. 2017,
J Math Psychol 81:80-97; 2020, J Stat Softw 92(10)), method ``"normal"``:

* the draws (on the sampler's unconstrained scale) are split per chain: the first half fits a multivariate
  normal proposal g (mean and covariance), the second half enters the iterative scheme;
* as many draws from g as there are second-half draws are taken and the model's log density (prior times
  likelihood, with every normalising constant and the log-Jacobian of the transforms: nutpie's own compiled
  function) is evaluated there;
* the iterative scheme of Meng & Wong (their eq. 4.1, with the effective sample size of the posterior draws in
  the weights, as bridgesampling's ``use_neff = TRUE``) runs to a relative change below 1e-10;
* its error is the approximate relative mean-squared error of Fruhwirth-Schnatter (2004, eq. 16), with the
  autocorrelation of the posterior draws through their effective sample size (bridgesampling's
  ``error_measures``; it uses ``spectrum0.ar``). ``cv`` is its square root: the coefficient of variation of the
  marginal likelihood, i.e. roughly the standard error of ``log_ml``.

Point hypotheses are fitted on the same compiled graph (no extra compile) as the limit of a prior concentrated
at the point: mu = 0 as the effect prior's family centred at 0 with scale :data:`POINT_SCALE`, tau = 0 as the tau
prior half-normal with that scale (:func:`shrunk_tau_prior`). The error of that limit is of order
POINT_SCALE^2 times the curvature of the log likelihood (about 1e-7 here), far below the Monte Carlo error.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import logsumexp

__all__ = ["POINT_SCALE", "BridgeResult", "bridge_sampling", "log_density_function", "shrunk_tau_prior",
           "null_effect_prior"]

POINT_SCALE = 1e-4  # the width of the concentrated prior standing for a point hypothesis


@dataclass
class BridgeResult:
    """A bridge-sampling estimate of a log marginal likelihood.

    Attributes
    ----------
    log_ml : float
        log p(y), with every normalising constant (comparable across models fitted to the same data).
    re2 : float
        Approximate relative mean-squared error of p(y) (Fruhwirth-Schnatter 2004).
    cv : float
        sqrt(re2): approximately the standard error of ``log_ml`` (a cv of 0.01 is a 1% error on p(y)).
    iterations : int
        Iterations of the Meng-Wong scheme.
    n_post, n_proposal : int
        Posterior draws in the scheme and draws from the normal proposal.
    """

    log_ml: float
    re2: float
    cv: float
    iterations: int
    n_post: int
    n_proposal: int

    def to_dict(self) -> dict:
        return {"log_ml": self.log_ml, "cv": self.cv, "re2": self.re2, "iterations": self.iterations,
                "n_post": self.n_post, "n_proposal": self.n_proposal, "method": "bridge sampling (normal proposal)"}


def _ess(x: np.ndarray) -> float:
    """Bulk effective sample size of a (chain, draw) array (ArviZ)."""
    import arviz as az

    x = np.asarray(x, dtype=float)
    if np.ptp(x) == 0:
        return float(x.size)
    from .summaries import arviz_numpy

    with arviz_numpy():
        return float(az.ess(x, method="bulk"))


def bridge_sampling(log_density, draws: np.ndarray, log_density_draws: np.ndarray | None = None, *,
                    rng: np.random.Generator, tol: float = 1e-10, maxiter: int = 1000) -> BridgeResult:
    """The log marginal likelihood of a model from posterior draws by bridge sampling (normal proposal).

    Parameters
    ----------
    log_density : callable
        ``log_density(x) -> float`` on one unconstrained vector: log prior + log likelihood + log-Jacobian, with
        all normalising constants (``-inf`` where undefined).
    draws : ndarray, shape (chains, draws, dim)
        Posterior draws on the unconstrained scale.
    log_density_draws : ndarray, shape (chains, draws), optional
        ``log_density`` at ``draws`` if already known (nutpie stores it as ``logp``); computed otherwise.
    rng : numpy.random.Generator
        For the proposal draws.

    Returns
    -------
    BridgeResult
        ``log_ml`` and its approximate error ``cv`` (about the standard error of ``log_ml``).
    """
    draws = np.asarray(draws, dtype=float)
    if draws.ndim != 3:
        raise ValueError("draws must have shape (chains, draws, dim)")
    n_chain, n_draw, dim = draws.shape
    half = n_draw // 2
    if half < 2 * dim + 10:
        raise ValueError(f"too few draws for bridge sampling: {n_draw} per chain for {dim} parameters")
    if log_density_draws is None:
        log_density_draws = np.array([[log_density(x) for x in chain] for chain in draws])
    fit_part = draws[:, :half].reshape(-1, dim)
    iter_part = draws[:, half:2 * half]  # (chain, half, dim)
    q11 = np.asarray(log_density_draws, dtype=float)[:, half:2 * half]
    mean = fit_part.mean(axis=0)
    cov = np.cov(fit_part, rowvar=False).reshape(dim, dim)
    chol = np.linalg.cholesky(cov + 1e-12 * np.eye(dim) * max(1.0, float(np.max(np.diag(cov)))))
    log_det = 2.0 * float(np.sum(np.log(np.diag(chol))))

    def log_g(x):  # multivariate normal log density
        w = np.linalg.solve(chol, (x - mean).T)
        return -0.5 * np.sum(w**2, axis=0) - 0.5 * log_det - 0.5 * dim * math.log(2 * math.pi)

    n1 = n_chain * half
    n2 = n1
    prop = mean + (chol @ rng.standard_normal((dim, n2))).T
    q21 = np.array([log_density(x) for x in prop], dtype=float)
    q22 = log_g(prop)
    q12 = log_g(iter_part.reshape(-1, dim)).reshape(n_chain, half)
    l1 = (q11 - q12).ravel()
    l2 = q21 - q22
    l2 = np.where(np.isfinite(l2), l2, -np.inf)
    # effective sample size of the posterior draws in the scheme: the median over parameters (bridgesampling)
    neff = float(np.median([_ess(iter_part[:, :, j]) for j in range(dim)]))
    neff = min(neff, float(n1))
    s1, s2 = neff / (neff + n2), n2 / (neff + n2)
    lstar = float(np.median(l1))
    log_r = 0.0  # r = p(y) / exp(lstar), started at 1
    log_s1, log_s2 = math.log(s1), math.log(s2)
    it = 0
    while it < maxiter:
        it += 1
        num = logsumexp((l2 - lstar) - np.logaddexp(log_s1 + l2 - lstar, log_s2 + log_r))
        den = logsumexp(-np.logaddexp(log_s1 + l1 - lstar, log_s2 + log_r))
        new = math.log(n1 / n2) + num - den
        change = abs(new - log_r) / max(abs(new + lstar), 1e-300)
        log_r = new
        if change < tol:
            break
    log_ml = log_r + lstar
    # Fruhwirth-Schnatter (2004) relative MSE, as bridgesampling's error_measures
    lp_p = q11.ravel() - log_ml  # log normalised posterior at the posterior draws
    lp_g = q21 - log_ml
    f1 = np.exp(lp_g - np.logaddexp(math.log(0.5) + lp_g, math.log(0.5) + q22))
    f2 = np.exp(q12.ravel() - np.logaddexp(math.log(0.5) + lp_p, math.log(0.5) + q12.ravel()))
    ess_f2 = min(_ess(f2.reshape(n_chain, half)), float(n1))
    re2 = float(np.var(f1, ddof=1) / np.mean(f1) ** 2 / n2 + np.var(f2, ddof=1) / np.mean(f2) ** 2 / ess_f2)
    return BridgeResult(log_ml=float(log_ml), re2=re2, cv=math.sqrt(re2), iterations=it, n_post=n1,
                        n_proposal=n2)


def log_density_function(compiled):
    """``f(x) -> float``: the log density of a nutpie-compiled model (with its current data) at one unconstrained
    vector, through the compiled function nutpie samples with (so it equals the ``logp`` nutpie stores)."""
    n = compiled.n_dim
    grad, logp = np.zeros(n), np.zeros(())
    dbl = ctypes.POINTER(ctypes.c_double)
    fn = compiled.compiled_logp_func.ctypes
    ud = compiled.user_data.ctypes.data_as(ctypes.c_void_p)
    gp, lp = grad.ctypes.data_as(dbl), logp.ctypes.data_as(dbl)

    def f(x):
        x = np.ascontiguousarray(x, dtype=float)
        rc = fn(n, x.ctypes.data_as(dbl), gp, lp, ud)
        return float(logp) if rc == 0 else -math.inf

    return f


def null_effect_prior(effect_prior):
    """The effect prior's family centred at 0 and concentrated (scale :data:`POINT_SCALE`): mu = 0."""
    from .priors import Prior

    loc_i, scale_i = effect_prior.definition.location_scale
    params = list(effect_prior.params)
    params[loc_i], params[scale_i] = 0.0, POINT_SCALE
    return _with_params(effect_prior, params, Prior)


def shrunk_tau_prior(tau_prior):
    """The prior standing for tau = 0: half-normal(:data:`POINT_SCALE`), whatever the fitted tau prior's family.

    The fixed-effect model does not depend on the family, and a light tail matters: the evidence under a
    concentrated prior is int p(y | tau) pi(tau) dtau, and where the data favour heterogeneity p(y | tau) exceeds
    p(y | 0) by factors up to e^50, so a polynomial tail (half-Cauchy, half-t, inverse-gamma) scaled by any small
    factor keeps enough mass at large tau to dominate it. A half-normal's tail above 1e-3 is exp(-50)-small. The
    fit uses the half-normal's compiled structure (the package default family: usually compiled already)."""
    from .priors import parse

    return parse(f"halfnormal({POINT_SCALE!r})", "tau")


def _with_params(prior, params, cls):
    import dataclasses

    spec = f"{prior.family}({', '.join(repr(float(v)) for v in params)})"
    return dataclasses.replace(prior, params=tuple(float(v) for v in params), spec=spec)


# the four models of metaBMA-style averaging: (mu = 0, tau = 0) per model
HYPOTHESES = {"fixed_null": (True, True), "fixed": (False, True), "random_null": (True, False),
              "random": (False, False)}


@dataclass
class ModelEvidence:
    """One model's bridge-sampling evidence, the convergence diagnostics of its fit and its posterior draws of mu
    (None under mu = 0)."""

    name: str
    result: BridgeResult
    diagnostics: Any  # rescuemeta.sampling.Diagnostics
    mu: np.ndarray | None

    def to_dict(self) -> dict:
        return {**self.result.to_dict(), "diagnostics": self.diagnostics.to_dict()}


def model_evidences(prep, cfg, priors: dict, sampler=None, names=tuple(HYPOTHESES)) -> dict[str, ModelEvidence]:
    """Log marginal likelihoods of a sampled model under the point hypotheses ``names`` (keys of
    :data:`HYPOTHESES`), by bridge sampling on the fitted model's compiled graph.

    Parameters
    ----------
    prep : rescuemeta.fit.PreparedData
    cfg : rescuemeta.fit.FitConfig
        Its priors are those of the ``random`` model; mu = 0 and tau = 0 replace them by concentrated priors
        (:func:`null_effect_prior`, :func:`shrunk_tau_prior`). At least 1000 draws per chain.
    priors : dict
        ``cfg.priors()``.

    Returns
    -------
    dict
        name -> :class:`ModelEvidence`.
    """
    from .sampling import default_sampler

    sampler = sampler or default_sampler(cfg.backend)
    tau0 = shrunk_tau_prior(priors["tau"])
    mu0 = null_effect_prior(priors["effect"])
    out = {}
    for name in names:
        null_mu, null_tau = HYPOTHESES[name]
        res, diag = sampler.log_evidence(
            prep.model_data, tau0 if null_tau else priors["tau"], mu0 if null_mu else priors["effect"],
            priors["baseline"] if cfg.kind.baseline_prior else None, draws=max(cfg.draws, 1000), tune=cfg.tune,
            chains=cfg.chains, seed=cfg.seed + list(HYPOTHESES).index(name),
            coef_prior=priors["coef"] if cfg.mods else None)
        out[name] = ModelEvidence(name, res[0], diag, None if null_mu else res[1])
    return out


def bayes_factors(evidences: dict[str, ModelEvidence], mu_null: bool = True) -> dict:
    """BF01 for mu = 0 and tau = 0 against the random-effects model, from :func:`model_evidences`.

    Returns
    -------
    dict
        ``bf01_mu``, ``bf01_tau`` (> 1 favours the point hypothesis), ``log_evidence`` (the random-effects
        model's), their errors ``log_bf01_mu_se``, ``log_bf01_tau_se``, ``log_evidence_se`` (sqrt of the summed
        relative MSEs: about the standard error of the log), ``models`` (each fit's evidence and diagnostics)
        and ``warnings`` (fits that failed the convergence checks).
    """
    r = evidences["random"].result

    def bf(name):
        if name not in evidences:
            return None, None
        o = evidences[name].result
        return math.exp(o.log_ml - r.log_ml), math.sqrt(o.re2 + r.re2)

    bmu, emu = bf("random_null") if mu_null else (None, None)
    btau, etau = bf("fixed")
    return {"bf01_mu": bmu, "bf01_tau": btau, "log_evidence": r.log_ml, "log_bf01_mu_se": emu,
            "log_bf01_tau_se": etau, "log_evidence_se": r.cv, "method": "bridge sampling (normal proposal)",
            "models": {n: e.to_dict() for n, e in evidences.items()}, "warnings": convergence_warnings(evidences)}


def convergence_warnings(evidences: dict[str, ModelEvidence]) -> list[str]:
    """One line per evidence fit that failed the convergence checks (reported, never dropped)."""
    return [f"{n}: R-hat {e.diagnostics.rhat_max:.3f}, ESS {e.diagnostics.ess_bulk_min:.0f}, "
            f"{e.diagnostics.divergences} divergences" for n, e in evidences.items() if not e.diagnostics.ok]
