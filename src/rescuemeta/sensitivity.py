"""The sensitivity stage: the same analysis across a grid of priors and inclusion sets, cheaply (one compile
per model structure; prior values are ``pm.Data``), with power-scaling diagnostics (ArviZ ``psens``), a
resumable on-disk cache, and local (process pool) or Dask execution; plus a simulation-study mode.

Spec (``models/sensitivity.toml``), top-level keys:

=================  ===========================================================================================
``outcomes``       outcome names or ``["*"]`` (default: every outcome)
``models``         ``contrast``/``proportion``/``normal`` (default ``["contrast", "proportion"]``)
``tau_priors``     list of tau prior specs (required), or a table of lists per model kind (``[tau_priors]
                   contrast = [...]``, kinds not named take their default grid); Turner priors are refused
                   for the proportion model
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

import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from . import figures
from .atomic import atomic_path, ensure_dir
from .data import StudyTable, load_studies
from .description import Description
from .diagnostics import PSENSE_THRESHOLD, exact_idata, psense, tau_density  # noqa: F401 - re-exported
from .errors import InputError
from .fit import FitConfig, fit
from .kinds import MODEL_KINDS
from .models import padded_size, structure_key
from .priors import DEFAULT_BASELINE_PRIOR, DEFAULT_EFFECT_PRIOR, TURNER_DEFAULT_COMPARISON, parse
from .priors import is_matched as _is_matched
from .priors import resolve_matched as _resolve_turner
from .runner import GridResult, _cache_put, config_hash, run_grid  # noqa: F401 - re-exported
from .spec import check_prior, check_ratio_settings, check_sampler_settings, check_tau_priors, tau_priors_for
from .tomlio import check_keys, read_toml

__all__ = ["DEFAULT_SENSITIVITY", "INCLUSION_SETS", "TURNER_DEFAULT_COMPARISON", "SimulationSpec", "SensitivitySpec",
           "load_sensitivity", "grid", "run_one", "run_group", "tidy", "write_tables", "plot", "default_cache_dir"]

DEFAULT_SENSITIVITY = Path("models/sensitivity.toml")
INCLUSION_SETS = {"dedup": (False, ()), "all_studies": (True, ()),
                  "exclude_derived": (False, ("approximate", "denominator_fitted"))}
_KEYS = {"outcomes": list, "models": list, "tau_priors": (list, dict), "effect_priors": list, "inclusion": list,
         "thresholds": list, "measure": str, "baseline_prior": str, "draws": int, "tune": int, "chains": int,
         "seed": int, "simulation": dict, "bayes_factors": bool, "reweight": bool}
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
    tau_priors: list | dict = field(default_factory=list)
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
    bayes_factors: bool = False  # sampled models: BF01 for mu = 0 and tau = 0 by bridge sampling per row (4x the fits)
    reweight: bool = True  # sampled models: reweight earlier fits of the group where k-hat allows (run_one)

    def tau_priors_for(self, kind: str) -> list[str]:
        """The tau priors of the grid for model ``kind`` (a list for every kind, or its entry of a table)."""
        return list(tau_priors_for(self.tau_priors, kind, many=True))


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
            if sim.model not in ("contrast", "proportion", "normal"):
                raise InputError(f"key 'simulation.model' must be contrast, proportion or normal, got {sim.model!r}",
                                 file=path)
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
    lst = spec.effect_priors
    if not lst or not all(isinstance(x, str) for x in lst):
        raise InputError("key 'effect_priors' must be a non-empty list of prior specs", file=path)
    for i, x in enumerate(lst):
        check_prior(x, "effect", f"effect_priors[{i}]", path)
    check_prior(spec.baseline_prior, "effect", "baseline_prior", path)
    bad = [m for m in spec.models if m not in MODEL_KINDS]
    if bad or not spec.models:
        raise InputError(f"key 'models': {bad or 'empty'}; choose from {', '.join(MODEL_KINDS)}", file=path)
    if spec.simulation is not None and spec.simulation.model == "normal":
        bad = [x for x in lst if parse(x, "effect").family != "normal"]
        if bad:
            raise InputError(f"key 'effect_priors': the exact normal-normal simulation needs normal effect priors, "
                             f"got {', '.join(bad)}", file=path)
    models = [spec.simulation.model] if spec.simulation is not None else spec.models
    check_tau_priors(spec.tau_priors, models, "tau_priors", path, many=True)
    bad = [x for x in spec.inclusion if x not in INCLUSION_SETS]
    if bad or not spec.inclusion:
        raise InputError(f"key 'inclusion': {bad or 'empty'}; choose from {', '.join(INCLUSION_SETS)}", file=path)
    check_ratio_settings(spec, path)
    check_sampler_settings(spec, path)
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
                    for tp in spec.tau_priors_for(m):
                        MODEL_KINDS[m].check_tau_prior(tp)  # no Turner prior for proportions
                        if _is_matched(tp):
                            if desc.turner(oc) is None and unmatched == "skip":
                                continue
                            tp = _resolve_turner(tp, oc, desc)
                        rows.append({"outcome": oc, "model": m, "measure": spec.measure, "tau_prior": parse(tp).spec,
                                     "effect_prior": parse(ep, "effect").spec,
                                     "baseline_prior": parse(spec.baseline_prior, "effect").spec, "inclusion": inc,
                                     "draws": spec.draws, "tune": spec.tune, "chains": spec.chains, "seed": spec.seed,
                                     "thresholds": spec.thresholds,
                                     **({"bayes_factors": True} if spec.bayes_factors else {}),
                                     **({} if spec.reweight else {"reweight": False})})
    return rows


def _fit_config(cfg: dict) -> FitConfig:
    all_studies, exclude = INCLUSION_SETS[cfg["inclusion"]]
    return FitConfig(outcome=cfg["outcome"], model=cfg["model"], measure=cfg["measure"], tau_prior=cfg["tau_prior"],
                     effect_prior=cfg["effect_prior"], baseline_prior=cfg["baseline_prior"], all_studies=all_studies,
                     exclude_basis=exclude, draws=cfg["draws"], tune=cfg["tune"], chains=cfg["chains"],
                     seed=cfg["seed"], bayes_factors=bool(cfg.get("bayes_factors", False)))


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

_TABLES: dict = {}


def _table(data_path: str):
    """The study table, read once per process and file version (path, size, mtime)."""
    st = os.stat(data_path)
    key = (os.path.abspath(data_path), st.st_size, st.st_mtime_ns)
    if key not in _TABLES:
        _TABLES[key] = load_studies(data_path)
    return _TABLES[key]


# reference fits of this process, per model and data (everything but the priors on tau and mu): a new prior is
# first tried as a reweighting of one of them (:func:`rescuemeta.fit.reweight`)
_REFERENCES: dict[tuple, list] = {}
MAX_REFERENCES = 8  # per model and data: the fits kept (most recent first)


def _reference_indicator(query: str, ref):
    """:func:`rescuemeta.queries.indicator` of ``query`` on a reference fit, computed once per reference (every
    configuration reweighted from it checks the same values: 47 rows x 3 references x 2 queries on a 50-prior grid)."""
    from .queries import indicator

    memo = ref.__dict__.setdefault("_reference_indicators", {})
    if query not in memo:
        memo[query] = indicator(ref, query)
    return memo[query]


def _fit(table, fc: FitConfig, fit_cache):
    """:func:`rescuemeta.fit.fit`, or with ``fit_cache`` (a directory) :func:`rescuemeta.fit.fit_cached`: the same
    draws (a fit is a function of its data and configuration), read from the disk where an earlier fit of this
    configuration (the report's main analysis: its fits under the grid's own prior) left them."""
    if fit_cache is None:
        return fit(table, fc)
    from .fit import fit_cached

    return fit_cached(table, fc, Path(fit_cache))


def _fit_or_reweight(table, fc: FitConfig, reweight: bool, functions=(), fit_cache=None):
    """``(FitResult, how)``: the configuration reweighted from the best reference fit of this process (smallest
    Pareto k-hat among those accepted; :func:`rescuemeta.fit.reweight_best`), or fitted (and kept as a
    reference; with ``fit_cache``, read from that fit cache when there, see :func:`_fit`). ``how`` is None for a
    fit, else ``{reference, pareto_k, ess, ess_functions}``."""
    from dataclasses import asdict

    from .fit import reweight_best

    sampled = fc.kind.binomial or fc.method == "nuts"
    if not (reweight and sampled and not fc.bayes_factors):
        return _fit(table, fc, fit_cache), None
    key = (table.sha256,
           tuple((k, v) for k, v in sorted(asdict(fc).items()) if k not in ("tau_prior", "effect_prior")))
    res, info = reweight_best(_REFERENCES.get(key, []), fc, table=table, functions=functions)
    if res is not None:
        return res, info
    res = _fit(table, fc, fit_cache)
    refs = _REFERENCES.setdefault(key, [])
    refs.insert(0, res)
    del refs[MAX_REFERENCES:]
    return res, None


def _median_mcse(res, var: str, how: dict | None) -> float:
    """Monte Carlo SE of the posterior median of ``var``: ArviZ's quantile MCSE for a fit; for a reweighted fit the
    same construction (the draws at the 16% and 84% points of the median's Beta sampling distribution) with the
    reweighting's ESS, since its resampled draws repeat and ArviZ would read their autocorrelation instead."""
    import arviz as az
    import numpy as np
    from scipy import stats

    x = res.idata.posterior[var].values
    if how is None:
        from .summaries import arviz_numpy

        with arviz_numpy():
            return float(az.mcse(x, method="quantile", prob=0.5))
    ess = how["ess"]
    lo, hi = stats.beta.ppf([0.1586553, 0.8413447], ess * 0.5 + 1, ess * 0.5 + 1)
    xs = np.sort(x.ravel())
    n = xs.size
    return float((xs[int(np.ceil(min(hi * n - 1, n - 1)))] - xs[int(np.floor(max(lo * n - 1, 0)))]) / 2)


def run_one(cfg: dict, data_path, reweight: bool = True, fit_cache=None) -> dict:
    """Fit one configuration and return its tidy row (never raises for bad data: the row says why).

    With ``reweight`` (default) a sampled configuration is first tried as an importance reweighting of an earlier
    fit of this process with other priors on tau and mu (:func:`rescuemeta.fit.reweight`: accepted at Pareto k-hat
    <= 0.7 and ESS >= 400, else refitted); the row says which: ``reweighted_from`` (the reference's tau prior, or
    None for a fit) and ``reweight_khat``. ``fit_cache``: a fit cache directory (:func:`rescuemeta.fit.fit_cached`)
    a fitted row reads its draws from when they are there (the same draws either way)."""
    from .pipeline import mirror_query
    from .queries import probability
    from .sampling import ConvergenceError

    table = data_path if isinstance(data_path, StudyTable) else _table(data_path)
    fc = _fit_config(cfg)
    row = {k: cfg[k] for k in ("outcome", "model", "measure", "tau_prior", "effect_prior", "inclusion")}
    row["measure"] = fc.effect_measure
    t0 = time.perf_counter()
    queries = []
    if fc.kind.estimand == "ratio":  # the row's probabilities of benefit (their tails decide if reweighting may do)
        higher = table.description.better(cfg["outcome"]) == "higher"
        queries = [mirror_query(f"{fc.effect_measure} < {t}") if higher else f"{fc.effect_measure} < {t}"
                   for t in cfg["thresholds"]]
    functions = [partial(_reference_indicator, q) for q in queries]
    try:
        res, how = _fit_or_reweight(table, fc, reweight, functions, fit_cache)
    except InputError as e:
        row.update(status="unavailable", reason=e.message, k=0)
        return row
    except ConvergenceError as e:
        kept = ("rhat_max", "ess_bulk_min", "ess_tail_min", "divergences")
        row.update(status="failed", reason=str(e), k=None,
                   **{f"diag_{k}": v for k, v in e.diagnostics.items() if k in kept})
        return row
    # a row reads its intervals computed alone (FitResult.interval: what the summary computes for them, without the
    # per-study effects, HDIs and predictive checks a grid row does not show: ~20 ms of each reweighted row, most of
    # a second of an exact normal-model row)
    s = res.summary() if fc.bayes_factors else None
    row.update(status="ok", k=s["k"] if s is not None else res.k,
               reweighted_from=None if how is None else how["reference"]["tau_prior"]
               + ("" if how["reference"]["effect_prior"] == fc.priors()["effect"].spec
                  else f"; mu ~ {how['reference']['effect_prior']}"),
               reweight_khat=None if how is None else how["pareto_k"])
    mu, tau = _interval(res, s, "mu"), _interval(res, s, "tau")
    row.update(mu_median=mu[1], mu_low=mu[0], mu_high=mu[2], tau_median=tau[1], tau_low=tau[0], tau_high=tau[2])
    if res.exact is None:  # Monte Carlo SEs of the medians (0 for the exact posterior's quadrature)
        row.update(mu_median_mcse=_median_mcse(res, "mu", how), tau_median_mcse=_median_mcse(res, "tau", how))
    else:
        row.update(mu_median_mcse=0.0, tau_median_mcse=0.0)
    eff_key = "rate" if fc.kind.estimand == "rate" else fc.effect_measure.lower()
    eff = _interval(res, s, eff_key)
    row.update(effect=eff_key.upper() if eff_key != "rate" else "rate", effect_median=eff[1], effect_low=eff[0],
               effect_high=eff[2])
    if fc.kind.estimand == "ratio":
        rr = _interval(res, s, "rr")
        row.update(rr_median=rr[1], rr_low=rr[0], rr_high=rr[2])
        # P(benefit) in the outcome's declared direction: P(ratio < t), or P(ratio > 1/t) where more events are
        # better (undescribed outcomes: fewer events are taken as better)
        higher = table.description.better(cfg["outcome"]) == "higher"
        row["benefit"] = "more events" if higher else "fewer events"
        for i, q in enumerate(queries):
            pr = probability(res, q)
            row[probability_key(q)] = pr["probability"]
            # a reweighted row's MCSE from the probability's own importance-sampling ESS (the resampled draws
            # repeat, so their autocorrelation would understate it)
            row[probability_key(q) + "_mcse"] = (pr["mcse"] if how is None else
                                                 math.sqrt(pr["probability"] * (1 - pr["probability"])
                                                           / how["ess_functions"][i]))
    # exact (normal model), bridge sampling (bayes_factors = true) or null
    bf = (s.get("bayes_factors") if s is not None else
          res.bayes_factors(compute=False) if res.exact is not None else None) or {}
    row.update(bf01_mu=bf.get("bf01_mu"), bf01_tau=bf.get("bf01_tau"), log_evidence=bf.get("log_evidence"),
               log_evidence_se=bf.get("log_evidence_se"))
    d = s["diagnostics"] if s is not None else res.diagnostics_record()
    row.update(method=("exact" if res.exact is not None else "nuts") + (" (reweighted)" if how is not None else ""),
               diag_rhat_max=d.get("rhat_max"),
               diag_ess_bulk_min=d.get("ess_bulk_min"),
               diag_ess_tail_min=d.get("ess_tail_min"), diag_divergences=d.get("divergences"), diag_ok=d.get("ok"))
    idata = exact_idata(res, seed=cfg["seed"]) if res.exact is not None else res.idata
    ps = psense(idata)
    for v in ("mu", "tau"):
        row[f"psens_prior_{v}"] = ps[v]["prior"]
        row[f"psens_lik_{v}"] = ps[v]["likelihood"]
        row[f"psens_diag_{v}"] = ps[v]["diagnosis"]
    row["psens_khat"] = ps["khat"]
    row["psens_khat_ok"] = ps["khat_ok"]
    row["tau_density"] = tau_density(res, idata)
    row["seconds"] = time.perf_counter() - t0
    return row


def _interval(res, s: dict | None, key: str) -> tuple:
    """(q025, q50, q975) of a quantity of :meth:`rescuemeta.fit.FitResult.summary`: from the summary ``s`` when
    given, else computed alone (:meth:`rescuemeta.fit.FitResult.interval`); Nones where the summary has no such key
    (RR and RD without a control risk)."""
    if s is not None:
        v = s.get(key)
        return (None, None, None) if v is None else (v["q025"], v["q50"], v["q975"])
    return res.interval(key)


def probability_key(query: str) -> str:
    """The row column of a threshold query: ``"OR < 0.8"`` -> ``p_or_lt_0.8``, ``"OR > 1.25"`` -> ``p_or_gt_1.25``."""
    from .queries import parse_query

    q = parse_query(query)
    op = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge"}[q.op]
    return f"p_{q.scale.lower()}_{op}_{q.value:g}"


def probability_label(key: str) -> str:
    """``p_or_gt_1.25`` -> ``P(OR > 1.25)``."""
    _, scale, op, value = key.split("_", 3)
    return f"P({scale.upper()} {dict(lt='<', le='<=', gt='>', ge='>=')[op]} {value})"


def probability_keys(row: dict) -> list[str]:
    """The threshold-probability columns of a row, in order."""
    return [k for k in row if k.startswith("p_") and k.count("_") >= 3 and k.split("_")[2] in ("lt", "le", "gt", "ge")
            and not k.endswith("_mcse")]


def run_group(cfgs: list[dict], data_path, cache_dir: str | None, data_sha256: str, on_row=None,
              fit_cache: str | None = None) -> list[dict]:
    """Run configurations that share a model structure in one process (one compile), writing each row to the
    cache as soon as it exists (when ``cache_dir`` is given). ``data_path``: the study table's path, or the
    :class:`rescuemeta.data.StudyTable` itself (what Dask workers get). ``on_row(cfg, row)`` is called as each
    row exists (progress). ``fit_cache``: see :func:`run_one`.

    Reweighting (:func:`run_one`) draws on the fits of this group only, made in the group's order, so that a row's
    numbers depend on the grid and the number of workers (which splits groups), not on what the process ran
    before."""
    out = []
    _REFERENCES.clear()
    try:
        for cfg in cfgs:
            row = run_one(cfg, data_path, reweight=bool(cfg.get("reweight", True)), fit_cache=fit_cache)
            if cache_dir is not None:
                _cache_put(cache_dir, config_hash(cfg, data_sha256), row)
            if on_row is not None:
                on_row(cfg, row)
            out.append(row)
    finally:
        _REFERENCES.clear()
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
    evidence note) is printed under each forest. The drawing is :func:`rescuemeta.plots.prior_forest` and
    :func:`rescuemeta.plots.tau_prior_posterior`."""
    out_dir = ensure_dir(Path(out_dir) / "figures")
    written = []
    by = defaultdict(list)
    for r in rows:
        if r.get("status") == "ok":
            by[(r["outcome"], r["model"])].append(r)
    for (oc, m), rs in sorted(by.items()):
        # drawn from these rows only: re-used when they did not change (inside figures.memo, as the report does)
        written += figures.cached(f"sensitivity_{oc}_{m}", {"rows": rs, "note": note},
                                  partial(_plot_one, oc, m, rs, out_dir, note),
                                  figures.names(out_dir / f"sensitivity_{oc}_{m}")
                                  + figures.names(out_dir / f"tau_prior_posterior_{oc}_{m}"))
    return written


def _plot_one(oc: str, m: str, rs: list[dict], out_dir: Path, note: str | None) -> list[str]:
    from . import plots

    written = []
    ratio = rs[0]["effect"] != "rate"
    fig, axes = figures.new((13 if ratio else 8, 0.45 * len(rs) + 1.6), 1, 2 if ratio else 1, squeeze=False)
    plots.prior_forest(rs, ax=axes[0, 0], ax_prob=axes[0, 1] if ratio else None)
    if note:
        fig.text(0.01, 0.005, note, fontsize=7)
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    written += figures.save(fig, out_dir / f"sensitivity_{oc}_{m}", dpi=110)
    n = len({r["tau_prior"] for r in rs})
    cols = min(4, n)
    rws = math.ceil(n / cols)
    fig, axes = figures.new((3.4 * cols, 2.6 * rws), rws, cols, squeeze=False)
    plots.tau_prior_posterior(rs, axes=axes)
    fig.suptitle(f"{oc} ({m}): prior and posterior of tau", fontsize=10)
    fig.tight_layout()
    written += figures.save(fig, out_dir / f"tau_prior_posterior_{oc}_{m}", dpi=110)
    return written


def default_cache_dir(out_dir: str | Path) -> str:
    return str(Path(out_dir) / "cache")


from .simulate import simulation_grid, summarize_simulation  # noqa: E402, F401 - re-exported
