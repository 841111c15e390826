"""Simulated meta-analyses: data drawn from a chosen truth, for simulation studies that compare tau priors with
few studies (``[simulation]`` in a sensitivity spec), and for simulation-based calibration (Talts et al. 2018;
tests/helpers.py)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import expit

from .errors import InputError
from .models import ModelData
from .priors import parse
from .runner import _cache_put, config_hash

if TYPE_CHECKING:
    from .sensitivity import SensitivitySpec

__all__ = ["simulate_counts", "simulation_grid", "run_sim_one", "run_sim_group", "summarize_simulation"]


def simulate_counts(kind: str, rng: np.random.Generator, *, mu: float, tau: float, k: int, n_min: int = 40,
                    n_max: int = 120, alpha=None) -> tuple[ModelData, np.ndarray]:
    """One meta-analysis of ``k`` studies from the hierarchical model with known ``mu`` and ``tau``.

    Parameters
    ----------
    kind : {"contrast", "proportion"}
    rng : numpy.random.Generator
    mu, tau : float
        Pooled effect (log OR, or logit rate) and between-study SD.
    k : int
    n_min, n_max : int
        Arm sizes are drawn uniformly from this range (inclusive).
    alpha : array_like, optional
        Control-arm logits per study (``contrast``); required for ``contrast``.

    Returns
    -------
    (ModelData, ndarray)
        The counts, and the true study effects theta_i.
    """
    theta = mu + tau * rng.standard_normal(k)
    n1 = rng.integers(n_min, n_max + 1, k)
    if kind == "proportion":
        ai = rng.binomial(n1, expit(theta))
        return ModelData("proportion", {"ai": ai, "n1i": n1}), theta
    if kind != "contrast":
        raise ValueError(f"simulation supports contrast and proportion, not {kind!r}")
    alpha = np.asarray(alpha, dtype=float)
    n2 = rng.integers(n_min, n_max + 1, k)
    ai = rng.binomial(n1, expit(alpha + theta))
    ci = rng.binomial(n2, expit(alpha))
    return ModelData("contrast", {"ai": ai, "n1i": n1, "ci": ci, "n2i": n2}), theta


def simulation_grid(spec: SensitivitySpec) -> list[dict]:
    """The configurations of a simulation study: replications x effect priors x tau priors."""
    from .priors import is_matched as _is_matched

    sim = spec.simulation
    assert sim is not None, "simulation_grid needs a [simulation] table"
    out = []
    for r in range(sim.replications):
        for ep in spec.effect_priors:
            for tp in spec.tau_priors_for(sim.model):
                if _is_matched(tp):
                    raise InputError("turner(matched) needs an outcome; the simulation mode takes explicit priors",
                                     file=spec.path)
                out.append({"simulation": asdict(sim), "replication": r, "tau_prior": parse(tp).spec,
                            "effect_prior": parse(ep, "effect").spec,
                            "baseline_prior": parse(spec.baseline_prior, "effect").spec, "draws": spec.draws,
                            "tune": spec.tune, "chains": spec.chains, "seed": spec.seed})
    return out


def _sim_data(cfg: dict):
    """The simulated data set of one configuration. ``normal``: two-arm counts drawn as for ``contrast``, then
    each study's log odds ratio and its standard error (:func:`rescuemeta.effects.escalc`, 1/2 added to every cell
    of a study with a zero cell, as metafor), the data the normal-normal model is given in practice."""
    from scipy.special import logit

    from .sensitivity import SimulationSpec

    sim = SimulationSpec(**cfg["simulation"])
    rng = np.random.default_rng([cfg["seed"], cfg["replication"], 99])
    kind = "contrast" if sim.model == "normal" else sim.model
    alpha = np.full(sim.k, logit(sim.baseline_risk)) if kind == "contrast" else None
    md, _ = simulate_counts(kind, rng, mu=sim.mu, tau=sim.tau, k=sim.k, n_min=sim.n_per_arm,
                            n_max=sim.n_per_arm, alpha=alpha)
    if sim.model == "normal":
        from .effects import escalc

        a = md.arrays
        es = escalc("OR", a["ai"], a["n1i"], a["ci"], a["n2i"])
        md = ModelData("normal", {"y": np.asarray(es.yi, dtype=float), "s": np.sqrt(np.asarray(es.vi, dtype=float))})
    return sim, md


def _exact_quantiles(md: ModelData, tp, ep) -> tuple[np.ndarray, np.ndarray]:
    """Posterior 2.5%, 50% and 97.5% quantiles of mu and tau of the normal-normal model by quadrature
    (:class:`rescuemeta.exact.NormalNormalPosterior`; no sampling)."""
    from .exact import NormalNormalPosterior

    loc, scale = ep.params[:2]
    post = NormalNormalPosterior(md.arrays["y"], md.arrays["s"], tp, float(loc), float(scale))
    qs = (0.025, 0.5, 0.975)
    return (np.array([post.mu_quantile(q) for q in qs]), np.array([post.tau_quantile(q) for q in qs]))


def run_sim_one(cfg: dict) -> dict:
    """One simulated meta-analysis under one prior: posterior quantiles of mu and tau and whether their 95%
    intervals cover the truth (NUTS for ``contrast``/``proportion``, exact quadrature for ``normal``)."""
    from .sampling import ConvergenceError, default_sampler

    sim, md = _sim_data(cfg)
    tp, ep, bp = parse(cfg["tau_prior"]), parse(cfg["effect_prior"], "effect"), parse(cfg["baseline_prior"], "effect")
    row = {"replication": cfg["replication"], "tau_prior": cfg["tau_prior"], "effect_prior": cfg["effect_prior"],
           "model": sim.model, "k": sim.k, "true_mu": sim.mu, "true_tau": sim.tau}
    if sim.model == "normal":
        if ep.family != "normal":
            raise InputError(f"the exact normal-normal model needs a normal effect prior, not {ep.spec}")
        qm, qt = _exact_quantiles(md, tp, ep)
        row.update(status="ok", mu_median=qm[1], mu_low=qm[0], mu_high=qm[2], tau_median=qt[1], tau_low=qt[0],
                   tau_high=qt[2], mu_covered=bool(qm[0] <= sim.mu <= qm[2]),
                   tau_covered=bool(qt[0] <= sim.tau <= qt[2]), divergences=0)
        return row
    try:
        idata, diag = default_sampler().sample(md, tp, ep, bp if sim.model == "contrast" else None, draws=cfg["draws"],
                                               tune=cfg["tune"], chains=cfg["chains"],
                                               seed=cfg["seed"] * 7919 + cfg["replication"])
    except ConvergenceError as e:
        row.update(status="failed", reason=str(e))
        return row
    mu = idata.posterior["mu"].values.ravel()
    tau = idata.posterior["tau"].values.ravel()
    qm = np.quantile(mu, [0.025, 0.5, 0.975])
    qt = np.quantile(tau, [0.025, 0.5, 0.975])
    row.update(status="ok", mu_median=qm[1], mu_low=qm[0], mu_high=qm[2], tau_median=qt[1], tau_low=qt[0],
               tau_high=qt[2], mu_covered=bool(qm[0] <= sim.mu <= qm[2]), tau_covered=bool(qt[0] <= sim.tau <= qt[2]),
               divergences=diag.divergences)
    return row


def run_sim_group(cfgs: list[dict], data_path, cache_dir: str | None, data_sha256: str, on_row=None) -> list[dict]:
    out = []
    for cfg in cfgs:
        row = run_sim_one(cfg)
        if cache_dir is not None:
            _cache_put(cache_dir, config_hash(cfg, data_sha256), row)
        if on_row is not None:
            on_row(cfg, row)
        out.append(row)
    return out


def summarize_simulation(rows: list[dict]) -> list[dict]:
    """Per prior: coverage of the 95% CrIs of mu and tau (with binomial MCSE), bias and RMSE of the posterior
    median of mu, mean interval widths, failures."""
    by = defaultdict(list)
    for r in rows:
        by[(r["tau_prior"], r["effect_prior"])].append(r)
    out = []
    for (tp, ep), rs in by.items():
        ok = [r for r in rs if r.get("status") == "ok"]
        n = len(ok)
        if n == 0:
            out.append({"tau_prior": tp, "effect_prior": ep, "replications": len(rs), "failed": len(rs)})
            continue
        cov_mu = float(np.mean([r["mu_covered"] for r in ok]))
        cov_tau = float(np.mean([r["tau_covered"] for r in ok]))
        err = np.array([r["mu_median"] - r["true_mu"] for r in ok])
        out.append({"tau_prior": tp, "effect_prior": ep, "replications": len(rs), "failed": len(rs) - n,
                    "coverage_mu": cov_mu, "coverage_mu_mcse": math.sqrt(cov_mu * (1 - cov_mu) / n),
                    "coverage_tau": cov_tau, "coverage_tau_mcse": math.sqrt(cov_tau * (1 - cov_tau) / n),
                    "bias_mu": float(err.mean()), "rmse_mu": float(np.sqrt(np.mean(err**2))),
                    "width_mu": float(np.mean([r["mu_high"] - r["mu_low"] for r in ok])),
                    "width_tau": float(np.mean([r["tau_high"] - r["tau_low"] for r in ok])),
                    "tau_median_mean": float(np.mean([r["tau_median"] for r in ok]))})
    return out
