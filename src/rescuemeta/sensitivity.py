"""The sensitivity stage: the same analysis across a grid of priors and inclusion sets, cheaply (one compile
per model structure; prior values are ``pm.Data``), with power-scaling diagnostics (ArviZ ``psens``), a
resumable on-disk cache, and local (process pool) or Dask execution; plus a simulation-study mode.

Spec (``models/sensitivity.toml``), top-level keys:

=================  ===========================================================================================
``outcomes``       outcome names or ``["*"]`` (default: every outcome)
``models``         ``contrast``/``proportion``/``normal`` (default ``["contrast", "proportion"]``)
``tau_priors``     list of tau prior specs (required)
``effect_priors``  list of effect prior specs (default ``["normal(0, 4)"]``)
``inclusion``      any of ``dedup`` (one row per overlap group), ``all_studies``, ``exclude_derived`` (dedup and
                   no ``approximate``/``denominator_fitted`` counts) (default ``["dedup"]``)
``thresholds``     ratio thresholds: P(ratio < t) per configuration (default ``[1, 0.8]``)
``measure``        ``OR``/``RR`` for the normal model (default ``OR``)
``baseline_prior`` prior on alpha_i (default ``normal(0, 10)``)
``draws``, ``tune``, ``chains``, ``seed``   sampler settings (1000, 1000, 4, 1)
``[simulation]``   optional: run a simulation study instead (keys ``model``, ``k``, ``n_per_arm``,
                   ``baseline_risk``, ``mu``, ``tau``, ``replications``)
=================  ===========================================================================================
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from . import figures
from ._version import __version__
from .atomic import atomic_path, clean_stale_parts, code_fingerprint, ensure_dir, to_jsonable, write_text
from .data import load_studies
from .description import Description, OutcomeDescription
from .errors import InputError
from .fit import FitConfig, fit
from .kinds import MODEL_KINDS
from .models import padded_size, structure_key
from .priors import DEFAULT_BASELINE_PRIOR, DEFAULT_EFFECT_PRIOR, parse
from .spec import _check_prior, check_keys, read_toml

DEFAULT_SENSITIVITY = Path("models/sensitivity.toml")
INCLUSION_SETS = {"dedup": (False, ()), "all_studies": (True, ()),
                  "exclude_derived": (False, ("approximate", "denominator_fitted"))}
# ``turner(matched)`` / ``turner(matched, COMPARISON)`` in ``tau_priors`` picks the Turner et al. (2015) outcome
# type that the data's description gives each outcome (``[outcomes.NAME] turner = "..."``), and the comparison
# type of ``[dataset] turner_comparison`` (default below).
TURNER_DEFAULT_COMPARISON = "nonpharma_vs_placebo"
PSENSE_THRESHOLD = 0.05  # Kallioinen et al. (2023, Stat Comput 34:57): sensitivity >= 0.05 flags
_KEYS = {"outcomes": list, "models": list, "tau_priors": list, "effect_priors": list, "inclusion": list,
         "thresholds": list, "measure": str, "baseline_prior": str, "draws": int, "tune": int, "chains": int,
         "seed": int, "simulation": dict}
_SIM_KEYS = {"model": str, "k": int, "n_per_arm": int, "baseline_risk": float, "mu": float, "tau": float,
             "replications": int}


@dataclass
class SimulationSpec:
    model: str = "contrast"
    k: int = 5
    n_per_arm: int = 80
    baseline_risk: float = 0.3
    mu: float = -0.3
    tau: float = 0.2
    replications: int = 50


@dataclass
class SensitivitySpec:
    path: str
    outcomes: list = field(default_factory=lambda: ["*"])
    models: list = field(default_factory=lambda: ["contrast", "proportion"])
    tau_priors: list = field(default_factory=list)
    effect_priors: list = field(default_factory=lambda: [DEFAULT_EFFECT_PRIOR])
    inclusion: list = field(default_factory=lambda: ["dedup"])
    thresholds: list = field(default_factory=lambda: [1.0, 0.8])
    measure: str = "OR"
    baseline_prior: str = DEFAULT_BASELINE_PRIOR
    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    seed: int = 1
    simulation: SimulationSpec | None = None


def load_sensitivity(path: str | Path = DEFAULT_SENSITIVITY) -> SensitivitySpec:
    """Read and validate a sensitivity spec; unknown keys and bad values are :class:`InputError`."""
    doc = read_toml(path)
    check_keys(doc, _KEYS, path)
    spec = SensitivitySpec(path=str(path))
    for key, value in doc.items():
        if key == "simulation":
            sim_allowed = {**_SIM_KEYS, "baseline_risk": float, "mu": float, "tau": float}
            check_keys(value, sim_allowed, path, prefix="simulation.")
            sim = SimulationSpec(**{k: (float(v) if sim_allowed[k] is float else v)  # type: ignore[arg-type]
                                    for k, v in value.items()})
            if sim.model not in ("contrast", "proportion"):
                raise InputError(f"key 'simulation.model' must be contrast or proportion, got {sim.model!r}", file=path)
            for k_, lo in (("k", 1), ("n_per_arm", 1), ("replications", 1)):
                if getattr(sim, k_) < lo:
                    raise InputError(f"key 'simulation.{k_}' must be >= {lo}", file=path)
            if not 0 < sim.baseline_risk < 1:
                raise InputError("key 'simulation.baseline_risk' must be strictly between 0 and 1", file=path)
            if sim.tau < 0:
                raise InputError("key 'simulation.tau' must be >= 0", file=path)
            spec.simulation = sim
            continue
        setattr(spec, key, value)
    if not spec.tau_priors:
        raise InputError("key 'tau_priors' is required (a non-empty list of prior specs)", file=path)
    for key, kind in (("tau_priors", "tau"), ("effect_priors", "effect")):
        lst = getattr(spec, key)
        if not lst or not all(isinstance(x, str) for x in lst):
            raise InputError(f"key {key!r} must be a non-empty list of prior specs", file=path)
        for i, x in enumerate(lst):
            if kind == "tau" and _is_matched(x):
                # the outcome type comes from the data's description later; check the comparison type now
                probe = Description(outcomes={"x": OutcomeDescription("x", "x", None, "all_cause_mortality")})
                _check_prior(_resolve_turner(x, "x", probe), kind, f"{key}[{i}]", path)
                continue
            _check_prior(x, kind, f"{key}[{i}]", path)
    _check_prior(spec.baseline_prior, "effect", "baseline_prior", path)
    bad = [m for m in spec.models if m not in MODEL_KINDS]
    if bad or not spec.models:
        raise InputError(f"key 'models': {bad or 'empty'}; choose from {', '.join(MODEL_KINDS)}", file=path)
    bad = [x for x in spec.inclusion if x not in INCLUSION_SETS]
    if bad or not spec.inclusion:
        raise InputError(f"key 'inclusion': {bad or 'empty'}; choose from {', '.join(INCLUSION_SETS)}", file=path)
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in spec.thresholds):
        raise InputError("key 'thresholds' must be a list of positive ratios", file=path)
    spec.thresholds = [float(t) for t in spec.thresholds]
    if spec.measure not in ("OR", "RR"):
        raise InputError(f"key 'measure' must be OR or RR, got {spec.measure!r}", file=path)
    for key, lo in (("draws", 10), ("tune", 0), ("chains", 1), ("seed", 0)):
        if getattr(spec, key) < lo:
            raise InputError(f"key {key!r} must be >= {lo}, got {getattr(spec, key)}", file=path)
    return spec


# ---------------------------------------------------------------------------------------------------
# configurations and their cache keys
# ---------------------------------------------------------------------------------------------------

def grid(spec: SensitivitySpec, outcomes_available, only_outcome: str | None = None,
         description: Description | None = None, unmatched: str = "error") -> list[dict]:
    """Every configuration of the grid as a plain dict (picklable, JSON-able).

    ``outcomes_available`` is the study table (:class:`rescuemeta.data.StudyTable`, whose description is then
    used) or a list of outcome names. ``turner(matched)`` takes each outcome's Turner et al. (2015) outcome type
    from the description; for an outcome it names none, ``unmatched="error"`` raises InputError and ``"skip"``
    leaves that prior out for that outcome."""
    if hasattr(outcomes_available, "description"):
        description = description or outcomes_available.description
        outcomes_available = outcomes_available.outcomes
    desc = description or Description()
    outs = list(outcomes_available) if spec.outcomes == ["*"] else list(spec.outcomes)
    missing = [o for o in outs if o not in outcomes_available]
    if missing:
        raise InputError(f"key 'outcomes': {', '.join(missing)} not in the data", file=spec.path)
    if only_outcome is not None:
        if only_outcome not in outs:
            raise InputError(f"--outcome {only_outcome!r} is not in the spec's outcomes ({', '.join(outs)})")
        outs = [only_outcome]
    rows = []
    for oc in outs:
        for m in spec.models:
            for inc in spec.inclusion:
                for ep in spec.effect_priors:
                    for tp in spec.tau_priors:
                        if _is_matched(tp):
                            if desc.turner(oc) is None and unmatched == "skip":
                                continue
                            tp = _resolve_turner(tp, oc, desc)
                        rows.append({"outcome": oc, "model": m, "measure": spec.measure, "tau_prior": parse(tp).spec,
                                     "effect_prior": parse(ep, "effect").spec,
                                     "baseline_prior": parse(spec.baseline_prior, "effect").spec, "inclusion": inc,
                                     "draws": spec.draws, "tune": spec.tune, "chains": spec.chains, "seed": spec.seed,
                                     "thresholds": spec.thresholds})
    return rows


def _is_matched(spec: str) -> bool:
    return spec.replace(" ", "").lower().startswith("turner(matched")


def _resolve_turner(spec: str, outcome: str, desc: Description) -> str:
    """``turner(matched[, COMPARISON])`` -> ``turner(OUTCOME_TYPE, COMPARISON)`` for this outcome, from the
    data's description."""
    inner = spec.strip()[len("turner("):-1]
    parts = [x.strip() for x in inner.split(",")]
    comparison = parts[1] if len(parts) > 1 else (desc.turner_comparison or TURNER_DEFAULT_COMPARISON)
    if desc.turner(outcome) is None:
        raise InputError(f"tau prior {spec!r}: the data's description gives outcome {outcome!r} no Turner outcome "
                         "type ([outcomes.NAME] turner = \"...\"); give turner(OUTCOME_TYPE, COMPARISON) explicitly")
    return f"turner({desc.turner(outcome)}, {comparison})"


def config_hash(cfg: dict, data_sha256: str) -> str:
    """Cache key: data hash + model + priors + inclusion + sampler settings + package version + source
    fingerprint (:func:`rescuemeta.atomic.code_fingerprint`)."""
    blob = json.dumps({"cfg": cfg, "data": data_sha256, "version": __version__, "code": code_fingerprint()},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _fit_config(cfg: dict) -> FitConfig:
    all_studies, exclude = INCLUSION_SETS[cfg["inclusion"]]
    return FitConfig(outcome=cfg["outcome"], model=cfg["model"], measure=cfg["measure"], tau_prior=cfg["tau_prior"],
                     effect_prior=cfg["effect_prior"], baseline_prior=cfg["baseline_prior"], all_studies=all_studies,
                     exclude_basis=exclude, draws=cfg["draws"], tune=cfg["tune"], chains=cfg["chains"],
                     seed=cfg["seed"])


def _structure(cfg: dict, k_hint: int = 16) -> tuple:
    if "simulation" in cfg:
        return ("simulation", cfg["simulation"]["model"], parse(cfg["tau_prior"]).family,
                parse(cfg["effect_prior"], "effect").family)
    fc = _fit_config(cfg)
    p = fc.priors()
    return structure_key(cfg["model"], padded_size(k_hint), p["tau"], p["effect"], p["baseline"], shared_binomial=True)


# ---------------------------------------------------------------------------------------------------
# one configuration
# ---------------------------------------------------------------------------------------------------

def _psense(idata) -> dict:
    """Power-scaling sensitivity (ArviZ psens) of mu and tau to the prior and the likelihood, the priorsense
    diagnosis, and the Pareto k-hat of the power-scaling importance weights (delta = 0.01, as psens)."""
    import arviz as az

    out: dict[str, Any] = {}
    pri = az.psens(idata, component="prior", var_names=["mu", "tau"])
    lik = az.psens(idata, component="likelihood", var_names=["mu", "tau"])
    lp = sum(idata.log_prior[v].values.reshape(idata.log_prior[v].shape[0], idata.log_prior[v].shape[1], -1).sum(-1)
             for v in idata.log_prior.data_vars)
    ll = idata.log_likelihood["y"].values.sum(axis=-1)
    khat = 0.0
    for comp in (lp, ll):
        for alpha in (1 / 1.01, 1.01):
            _, k = az.psislw(((alpha - 1) * comp).ravel())
            khat = max(khat, float(np.asarray(k)))
    for v in ("mu", "tau"):
        p, li = float(pri[v]), float(lik[v])
        if p >= PSENSE_THRESHOLD and li >= PSENSE_THRESHOLD:
            diag = "prior-data conflict"
        elif p >= PSENSE_THRESHOLD:
            diag = "strong prior / weak likelihood"
        elif li < PSENSE_THRESHOLD:
            diag = "weak likelihood"
        else:
            diag = "-"
        out[v] = {"prior": p, "likelihood": li, "diagnosis": diag}
    out["khat"] = khat
    out["khat_ok"] = khat <= 0.7
    return out


def _exact_idata(res, n: int = 4000, seed: int = 1):
    """Independent draws from the exact normal-normal posterior (:meth:`NormalNormalPosterior.sample`) with
    log_prior and the marginal log_likelihood p(y_i | mu, tau), the likelihood psens power-scales for exact fits."""
    import arviz as az

    ex = res.exact
    d = ex.sample(n, np.random.default_rng([seed, 11]))
    tau, mu = d["tau"], d["mu"]
    y, s = ex.y, ex.s
    ll = stats.norm.logpdf(y[None, :], mu[:, None], np.sqrt(s[None, :] ** 2 + tau[:, None] ** 2))
    p = res.config.priors()
    shape = (4, n // 4)
    ds = az.convert_to_dataset
    return az.InferenceData(
        posterior=ds({"mu": mu.reshape(shape), "tau": tau.reshape(shape)}),
        log_likelihood=ds({"y": ll.reshape(*shape, -1)}),
        log_prior=ds({"mu": p["effect"].logpdf(mu).reshape(shape), "tau": p["tau"].logpdf(tau).reshape(shape)}))


def _tau_density(res, idata) -> dict:
    tau = idata.posterior["tau"].values.ravel()
    prior = res.config.priors()["tau"]
    post_hi = float(np.quantile(tau, 0.995))
    with np.errstate(all="ignore"):
        prior_hi = float(prior.ppf(0.95))
    # show the prior's bulk too, unless it is so vague (e.g. invgamma(0.001, 0.001)) that the posterior vanishes
    hi = max(post_hi, prior_hi) if np.isfinite(prior_hi) and prior_hi < 5 * post_hi else 1.5 * post_hi
    grid = np.linspace(hi / 400, hi, 120)
    if res.exact is not None:
        post = res.exact.tau_pdf(grid)
    else:  # ArviZ KDE with boundary correction (tau >= 0), onto the common grid
        import arviz as az

        kx, ky = az.kde(tau, bound_correction=True)
        post = np.interp(grid, kx, ky, left=float(ky[0]), right=0.0)
    return {"grid": grid.tolist(), "posterior": np.asarray(post).tolist(),
            "prior": np.nan_to_num(np.exp(prior.logpdf(grid)), posinf=0.0).tolist()}


_TABLES: dict = {}


def _table(data_path: str):
    """The study table, read once per process and file version (path, size, mtime)."""
    st = os.stat(data_path)
    key = (os.path.abspath(data_path), st.st_size, st.st_mtime_ns)
    if key not in _TABLES:
        _TABLES[key] = load_studies(data_path)
    return _TABLES[key]


def run_one(cfg: dict, data_path: str) -> dict:
    """Fit one configuration and return its tidy row (never raises for bad data: the row says why)."""
    from .queries import probability
    from .sampling import ConvergenceError

    table = _table(data_path)
    fc = _fit_config(cfg)
    row = {k: cfg[k] for k in ("outcome", "model", "measure", "tau_prior", "effect_prior", "inclusion")}
    row["measure"] = fc.effect_measure
    t0 = time.perf_counter()
    try:
        res = fit(table, fc)
    except InputError as e:
        row.update(status="unavailable", reason=e.message, k=0)
        return row
    except ConvergenceError as e:
        kept = ("rhat_max", "ess_bulk_min", "ess_tail_min", "divergences")
        row.update(status="failed", reason=str(e), k=None,
                   **{f"diag_{k}": v for k, v in e.diagnostics.items() if k in kept})
        return row
    s = res.summary()
    row.update(status="ok", k=s["k"])
    row.update(mu_median=s["mu"]["q50"], mu_low=s["mu"]["q025"], mu_high=s["mu"]["q975"],
               tau_median=s["tau"]["q50"], tau_low=s["tau"]["q025"], tau_high=s["tau"]["q975"])
    eff_key = "rate" if fc.kind.estimand == "rate" else fc.effect_measure.lower()
    row.update(effect=eff_key.upper() if eff_key != "rate" else "rate", effect_median=s[eff_key]["q50"],
               effect_low=s[eff_key]["q025"], effect_high=s[eff_key]["q975"])
    if fc.kind.estimand == "ratio":
        rr = s.get("rr")
        row.update(rr_median=rr["q50"] if rr else None, rr_low=rr["q025"] if rr else None,
                   rr_high=rr["q975"] if rr else None)
        for t in cfg["thresholds"]:
            row[f"p_{fc.effect_measure.lower()}_lt_{t:g}"] = probability(res, f"{fc.effect_measure} < {t}")["probability"]
    d = s["diagnostics"]
    row.update(method=s["method"], diag_rhat_max=d.get("rhat_max"), diag_ess_bulk_min=d.get("ess_bulk_min"),
               diag_ess_tail_min=d.get("ess_tail_min"), diag_divergences=d.get("divergences"), diag_ok=d.get("ok"))
    idata = _exact_idata(res, seed=cfg["seed"]) if res.exact is not None else res.idata
    ps = _psense(idata)
    for v in ("mu", "tau"):
        row[f"psens_prior_{v}"] = ps[v]["prior"]
        row[f"psens_lik_{v}"] = ps[v]["likelihood"]
        row[f"psens_diag_{v}"] = ps[v]["diagnosis"]
    row["psens_khat"] = ps["khat"]
    row["psens_khat_ok"] = ps["khat_ok"]
    row["tau_density"] = _tau_density(res, idata)
    row["seconds"] = time.perf_counter() - t0
    return row


def run_group(cfgs: list[dict], data_path: str, cache_dir: str | None, data_sha256: str) -> list[dict]:
    """Run configurations that share a model structure in one process (one compile), writing each row to the
    cache as soon as it exists."""
    out = []
    for cfg in cfgs:
        row = run_one(cfg, data_path)
        if cache_dir is not None:
            _cache_put(cache_dir, config_hash(cfg, data_sha256), row)
        out.append(row)
    return out


# ---------------------------------------------------------------------------------------------------
# cache (one JSON file per configuration, written atomically)
# ---------------------------------------------------------------------------------------------------

def _cache_put(cache_dir: str, key: str, row: dict) -> None:
    write_text(Path(cache_dir) / f"{key}.json", json.dumps(to_jsonable(row)) + "\n")


def _cache_get(cache_dir: str, key: str) -> dict | None:
    p = Path(cache_dir) / f"{key}.json"
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # never trust an unreadable entry: recompute it


# ---------------------------------------------------------------------------------------------------
# the runner
# ---------------------------------------------------------------------------------------------------

@dataclass
class GridResult:
    rows: list[dict]
    computed: int
    cached: int
    seconds: float


def _groups(todo: list[dict], workers: int) -> list[list[dict]]:
    by = defaultdict(list)
    for cfg in todo:
        by[_structure(cfg)].append(cfg)
    groups = list(by.values())
    # split large groups so that every worker has work (each piece compiles once in its worker)
    while len(groups) < workers and max(len(g) for g in groups) > 1:
        groups.sort(key=len)
        big = groups.pop()
        half = len(big) // 2
        groups += [big[:half], big[half:]]
    return groups


def run_grid(cfgs: list[dict], data_path: str, *, cache_dir: str | None, workers: int = 1,
             scheduler: str | None = None, progress=None) -> GridResult:
    """Run every configuration not already in the cache.

    Parameters
    ----------
    cfgs : list of dict
        From :func:`grid` (or :func:`simulation_grid`).
    data_path : str
    cache_dir : str or None
        One JSON file per configuration hash; re-running after an interruption only computes what is missing.
    workers : int
        Local processes (1 = in this process).
    scheduler : str, optional
        A Dask distributed scheduler address (``tcp://host:port``) or a ``distributed.Client``; the groups are
        then mapped on that cluster instead.
    progress : callable, optional
        Called with the number of configurations finished so far.

    Returns
    -------
    GridResult
        ``rows`` in the order of ``cfgs``.
    """
    t0 = time.perf_counter()
    sha = load_studies(data_path).sha256 if not cfgs or "simulation" not in cfgs[0] else "simulation"
    if cache_dir is not None:
        ensure_dir(cache_dir)
        clean_stale_parts(cache_dir)  # left by a writer that was killed mid-write
    keys = [config_hash(c, sha) for c in cfgs]
    rows: dict[str, dict] = {}
    for key in keys:
        hit = _cache_get(cache_dir, key) if cache_dir is not None else None
        if hit is not None:
            rows[key] = hit
    cached = len(rows)
    todo = [c for c, k in zip(cfgs, keys) if k not in rows]
    done = cached
    if progress:
        progress(done)
    runner = run_sim_group if (todo and "simulation" in todo[0]) else run_group
    if todo:
        groups = _groups(todo, max(workers, 1))
        if scheduler is not None:
            from distributed import Client, as_completed

            client = scheduler if isinstance(scheduler, Client) else Client(scheduler)
            try:
                futures = client.map(runner, groups, data_path=data_path, cache_dir=cache_dir, data_sha256=sha,
                                     pure=False)
                for fut, res in as_completed(futures, with_results=True):
                    for c, r in zip(groups[futures.index(fut)], res):
                        rows[config_hash(c, sha)] = r
                    done += len(res)
                    if progress:
                        progress(done)
            finally:
                if not isinstance(scheduler, Client):
                    client.close()
        elif workers > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor
            from concurrent.futures import as_completed as cf_completed

            ctx = mp.get_context("spawn")  # nutpie/numba state must not be forked
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futs = {pool.submit(runner, g, data_path, cache_dir, sha): g for g in groups}
                for fut in cf_completed(futs):
                    for c, r in zip(futs[fut], fut.result()):
                        rows[config_hash(c, sha)] = r
                    done += len(futs[fut])
                    if progress:
                        progress(done)
        else:
            for g in groups:
                for c in g:
                    r = runner([c], data_path, cache_dir, sha)[0]
                    rows[config_hash(c, sha)] = r
                    done += 1
                    if progress:
                        progress(done)
    ordered = [to_jsonable(rows[k]) for k in keys]
    return GridResult(ordered, computed=len(todo), cached=cached, seconds=time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------
# simulation study
# ---------------------------------------------------------------------------------------------------

def simulation_grid(spec: SensitivitySpec) -> list[dict]:
    sim = spec.simulation
    assert sim is not None, "simulation_grid needs a [simulation] table"
    out = []
    for r in range(sim.replications):
        for ep in spec.effect_priors:
            for tp in spec.tau_priors:
                if _is_matched(tp):
                    raise InputError("turner(matched) needs an outcome; the simulation mode takes explicit priors",
                                     file=spec.path)
                out.append({"simulation": asdict(sim), "replication": r, "tau_prior": parse(tp).spec,
                            "effect_prior": parse(ep, "effect").spec,
                            "baseline_prior": parse(spec.baseline_prior, "effect").spec, "draws": spec.draws,
                            "tune": spec.tune, "chains": spec.chains, "seed": spec.seed})
    return out


def _sim_data(cfg: dict):
    from scipy.special import logit

    from .simulate import simulate_counts

    sim = SimulationSpec(**cfg["simulation"])
    rng = np.random.default_rng([cfg["seed"], cfg["replication"], 99])
    alpha = np.full(sim.k, logit(sim.baseline_risk)) if sim.model == "contrast" else None
    md, _ = simulate_counts(sim.model, rng, mu=sim.mu, tau=sim.tau, k=sim.k, n_min=sim.n_per_arm,
                            n_max=sim.n_per_arm, alpha=alpha)
    return sim, md


def run_sim_one(cfg: dict) -> dict:
    from .sampling import ConvergenceError, default_sampler

    sim, md = _sim_data(cfg)
    tp, ep, bp = parse(cfg["tau_prior"]), parse(cfg["effect_prior"], "effect"), parse(cfg["baseline_prior"], "effect")
    row = {"replication": cfg["replication"], "tau_prior": cfg["tau_prior"], "effect_prior": cfg["effect_prior"],
           "model": sim.model, "k": sim.k, "true_mu": sim.mu, "true_tau": sim.tau}
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


def run_sim_group(cfgs: list[dict], data_path: str, cache_dir: str | None, data_sha256: str) -> list[dict]:
    out = []
    for cfg in cfgs:
        row = run_sim_one(cfg)
        if cache_dir is not None:
            _cache_put(cache_dir, config_hash(cfg, data_sha256), row)
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


# ---------------------------------------------------------------------------------------------------
# outputs: tidy table (CSV + Parquet) and figures
# ---------------------------------------------------------------------------------------------------

def tidy(rows: list[dict]):
    """The rows as a pandas DataFrame without the nested density column."""
    import pandas as pd

    return pd.DataFrame([{k: v for k, v in r.items() if k != "tau_density"} for r in rows])


def write_tables(rows: list[dict], out_dir: str | Path, stem: str = "sensitivity") -> list[str]:
    out_dir = ensure_dir(out_dir)
    df = tidy(rows)
    written = []
    with atomic_path(out_dir / f"{stem}.csv") as tmp:
        df.to_csv(tmp, index=False)
    written.append(str(out_dir / f"{stem}.csv"))
    with atomic_path(out_dir / f"{stem}.parquet") as tmp:
        df.to_parquet(tmp, index=False)
    written.append(str(out_dir / f"{stem}.parquet"))
    return written


@figures.styled()
def plot(rows: list[dict], out_dir: str | Path, note: str | None = None) -> list[str]:
    """Per outcome x model: the forest of priors (effect median and 95% CrI per configuration), P(ratio < t) per
    prior, and prior vs posterior densities of tau. PNG and SVG files, written atomically; ``note`` (the data's
    evidence note) is printed under each forest."""
    out_dir = ensure_dir(Path(out_dir) / "figures")
    written = []
    by = defaultdict(list)
    for r in rows:
        if r.get("status") == "ok":
            by[(r["outcome"], r["model"])].append(r)
    for (oc, m), rs in sorted(by.items()):
        labels = [f"{r['tau_prior']} | {r['effect_prior']} | {r['inclusion']} (k={r['k']})" for r in rs]
        eff = rs[0]["effect"]
        ratio = rs[0]["effect"] != "rate"
        fig, axes = figures.new((13 if ratio else 8, 0.45 * len(rs) + 1.6), 1, 2 if ratio else 1, squeeze=False)
        ax = axes[0, 0]
        y = np.arange(len(rs))[::-1]
        med = np.array([r["effect_median"] for r in rs])
        lo = np.array([r["effect_low"] for r in rs])
        hi = np.array([r["effect_high"] for r in rs])
        ax.errorbar(med, y, xerr=[med - lo, hi - med], fmt="s", color="k", capsize=3)
        ax.set_yticks(y, labels, fontsize=8)
        if eff != "rate":
            ax.set_xscale("log")
            ax.axvline(1, color="grey", lw=0.8, ls="--")
        ax.set_xlabel(f"{eff}: posterior median and 95% CrI")
        ax.set_title(f"{oc} ({m}): sensitivity to the priors")
        if ratio:
            ax2 = axes[0, 1]
            keys = [k for k in rs[0] if k.startswith("p_") and "_lt_" in k]
            for _j, key in enumerate(keys):
                label = "P(" + key[2:].split("_lt_")[0].upper() + " < " + key.split("_lt_")[1] + ")"
                ax2.plot([r[key] for r in rs], y, "o", label=label)
            ax2.set_yticks(y, [""] * len(y))
            ax2.set_xlim(-0.02, 1.02)
            ax2.set_xlabel("posterior probability")
            ax2.legend(fontsize=8, loc="best")
            ax2.set_title("P(benefit) per prior")
        if note:
            fig.text(0.01, 0.005, note, fontsize=7)
        fig.tight_layout(rect=(0, 0.02, 1, 1))
        written += figures.save(fig, out_dir / f"sensitivity_{oc}_{m}", dpi=110)
        # prior vs posterior density of tau, one panel per tau prior (first inclusion / effect prior)
        first: dict[str, dict] = {}
        for r in rs:
            first.setdefault(r["tau_prior"], r)
        n = len(first)
        cols = min(4, n)
        rws = math.ceil(n / cols)
        fig, axes = figures.new((3.4 * cols, 2.6 * rws), rws, cols, squeeze=False)
        for ax, (tp, r) in zip(axes.ravel(), first.items()):
            d = r["tau_density"]
            ax.plot(d["grid"], d["posterior"], color="C0", label="posterior")
            ax.plot(d["grid"], d["prior"], color="C1", ls="--", label="prior")
            ax.set_title(tp, fontsize=9)
            ax.set_xlabel("tau")
        for ax in axes.ravel()[n:]:
            ax.set_visible(False)
        axes[0, 0].legend(fontsize=8)
        fig.suptitle(f"{oc} ({m}): prior and posterior of tau", fontsize=10)
        fig.tight_layout()
        written += figures.save(fig, out_dir / f"tau_prior_posterior_{oc}_{m}", dpi=110)
    return written


def default_cache_dir(out_dir: str | Path) -> str:
    return str(Path(out_dir) / "cache")

