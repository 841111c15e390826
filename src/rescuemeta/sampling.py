"""The sampling stage: NUTS through nutpie (default) or ``pm.sample``, a compile cache keyed by model
structure, and a convergence guard that never lets a bad fit pass silently.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from . import kinds
from ._arviz import load as _load_arviz
from .defaults import ESS_MIN, RHAT_MAX, TARGET_ACCEPT
from .errors import EXIT_CONVERGENCE, ConvergenceError  # noqa: F401 - re-exported
from .models import (
    SHARED_BINOMIAL_BASELINE,
    SHARED_COEF_PRIOR,
    ModelData,
    build_model,
    extras,
    observed_data,
    padded_coefs,
    padded_size,
    prior_data,
    structure_key,
)
from .priors import Prior, parse

az = _load_arviz()  # ArviZ without its import-time numba compile (rescuemeta._arviz)

__all__ = ["Diagnostics", "diagnose", "Sampler", "default_sampler"]


@dataclass
class Diagnostics:
    """Convergence summary over mu, tau and the study-level parameters.

    ``ok`` is True when R-hat <= 1.01, bulk and tail ESS >= ``ess_required`` (400 unless the caller asks
    otherwise) and there are no divergences.
    """

    rhat_max: float
    ess_bulk_min: float
    ess_tail_min: float
    divergences: int
    ess_required: float
    attempts: int = 1
    target_accept: float = 0.8
    draws: int = 0

    @property
    def ok(self) -> bool:
        return (self.rhat_max <= RHAT_MAX and self.ess_bulk_min >= self.ess_required
                and self.ess_tail_min >= self.ess_required and self.divergences == 0)

    def to_dict(self) -> dict:
        return {"rhat_max": self.rhat_max, "ess_bulk_min": self.ess_bulk_min, "ess_tail_min": self.ess_tail_min,
                "divergences": self.divergences, "ess_required": self.ess_required, "attempts": self.attempts,
                "target_accept": self.target_accept, "draws": self.draws, "ok": self.ok}


def diagnose(idata, ess_min: float = ESS_MIN) -> Diagnostics:
    from .summaries import arviz_numpy

    var_names = [v for v in ("mu", "tau", "theta", "alpha") if v in idata.posterior]
    with arviz_numpy():  # no numba compile on a process's first fit (the same numbers)
        rhat = az.rhat(idata, var_names=var_names)
        ess_b = az.ess(idata, var_names=var_names, method="bulk")
        ess_t = az.ess(idata, var_names=var_names, method="tail")
    mx = lambda ds, f: float(f([float(f(ds[v].values)) for v in ds.data_vars]))
    div = int(idata.sample_stats["diverging"].values.sum()) if "diverging" in idata.sample_stats else 0
    required = float(ess_min)
    return Diagnostics(rhat_max=mx(rhat, np.nanmax), ess_bulk_min=mx(ess_b, np.nanmin),
                       ess_tail_min=mx(ess_t, np.nanmin), divergences=div, ess_required=required)


@dataclass
class Sampler:
    """NUTS with a compile cache.

    Compiled nutpie models are kept per structure (model kind, k, prior families); a new fit with other
    prior *values* on the same structure only swaps the ``pm.Data`` values (``with_data``), no recompile.
    The shared binomial graph (contrast, proportion, meta-regression, every tau family) is the
    hand-written log density of :mod:`rescuemeta.native` (compiled once, a few seconds, then loaded from numba's disk
    cache); the other structures are PyMC graphs compiled by :mod:`rescuemeta.compiled`, whose numba code and
    rewritten graphs are cached on disk, so a new process rebuilds them in about 1-2 s.
    ``compiles`` counts the compilations done, so tests and benchmarks can check that.
    """

    backend: str = "nutpie"
    _cache: dict = field(default_factory=dict)
    compiles: int = 0
    compile_seconds: float = 0.0

    pad: bool = True

    def _size(self, data: ModelData) -> int:
        return padded_size(data.k) if self.pad else data.k

    def _compiled(self, data: ModelData, tau_prior: Prior, effect_prior: Prior, baseline_prior: Prior | None,
                  coef_prior: Prior | None = None):
        from .compiled import compile_structure

        size = self._size(data)
        shared = self.pad  # padded nutpie models also share one binomial graph for contrast and proportion
        hier = data.hierarchical_baselines
        n_coef = 0 if data.X is None else (padded_coefs(data.X.shape[1]) if self.pad else data.X.shape[1])
        extra = extras(data)
        mk = kinds.get(data.kind)
        shared = shared and not hier and not extra
        if shared and mk.binomial:  # the shared binomial graph carries the regression (SHARED_COEF_PRIOR)
            if not n_coef:
                coef_prior = parse(SHARED_COEF_PRIOR, "effect")
            n_coef = n_coef or padded_coefs(1)
        elif n_coef:
            shared = False
        key = structure_key(data.kind, size, tau_prior, effect_prior, baseline_prior, shared_binomial=shared,
                            hierarchical_baselines=hier, n_coef=n_coef, coef_prior=coef_prior, extra=extra)
        if key not in self._cache:
            from . import native

            t0 = time.perf_counter()
            if native.supports(key):  # the shared binomial graph: its hand-written log density (no PyTensor graph)
                self._cache[key] = native.compile_native(key)
            else:
                self._cache[key] = compile_structure(key, lambda: build_model(
                    data, tau_prior, effect_prior, baseline_prior, size=size, shared_binomial=shared,
                    coef_prior=coef_prior, n_coef=n_coef or None))
            self.compiles += 1
            self.compile_seconds += time.perf_counter() - t0
        compiled = self._cache[key]
        if shared and mk.binomial and not mk.baseline_prior:
            bp: Prior | None = parse(SHARED_BINOMIAL_BASELINE, "effect")
        else:
            bp = baseline_prior if mk.baseline_prior else None
        return compiled.with_data(**prior_data(tau_prior, effect_prior, bp, hier, coef_prior if n_coef else None),
                                  **observed_data(data, size, shared_binomial=shared and mk.binomial,
                                                  n_coef=n_coef or None))

    def sample(self, data: ModelData, tau_prior: Prior, effect_prior: Prior, baseline_prior: Prior | None = None,
               *, draws: int = 1000, tune: int = 1000, chains: int = 4, seed: int = 1,
               target_accept: float = TARGET_ACCEPT, guard: bool = True, ess_min: float = ESS_MIN,
               coef_prior: Prior | None = None):
        """Sample the posterior; if the guard fails, retry once with target_accept 0.99 and 2x the draws
        (up to 4x when the ESS fell further short).

        Returns
        -------
        (arviz.InferenceData, Diagnostics)
            Raises :class:`ConvergenceError` (exit code 3) when the retry fails too and ``guard`` is set.
        """
        attempts = 0
        n_draws = draws
        for ta in (target_accept, max(0.99, target_accept)):
            attempts += 1
            t0 = time.perf_counter()
            c0 = self.compile_seconds
            idata = self._run(data, tau_prior, effect_prior, baseline_prior, draws=n_draws, tune=tune,
                              chains=chains, seed=seed + attempts - 1, target_accept=ta, coef_prior=coef_prior)
            diag = diagnose(idata, ess_min)
            diag.attempts = attempts
            diag.target_accept = ta
            diag.draws = n_draws
            idata.attrs["compile_seconds"] = self.compile_seconds - c0
            idata.attrs["sampling_seconds"] = time.perf_counter() - t0 - (self.compile_seconds - c0)
            if diag.ok or not guard:
                return idata, diag
            # the retry raises target_accept (against divergences; this also lowers ESS per draw) and doubles
            # the draws, or more when the ESS fell further short (at most 4x)
            short = min(diag.ess_bulk_min, diag.ess_tail_min)
            factor = max(2.0, math.ceil(10 * 1.25 * diag.ess_required / max(short, 1.0)) / 10)
            n_draws = int(draws * min(4.0, factor))
        raise ConvergenceError(
            f"sampling did not converge after {attempts} attempts: R-hat max {diag.rhat_max:.3f} (<= {RHAT_MAX}), "
            f"ESS bulk/tail min {diag.ess_bulk_min:.0f}/{diag.ess_tail_min:.0f} (>= {diag.ess_required:.0f}), "
            f"{diag.divergences} divergences{_advice(diag, data.kind)}", diag.to_dict())

    def log_evidence(self, data: ModelData, tau_prior: Prior, effect_prior: Prior,
                     baseline_prior: Prior | None = None, *, draws: int = 2000, tune: int = 1000, chains: int = 4,
                     seed: int = 1, coef_prior: Prior | None = None, target_accept: float = TARGET_ACCEPT):
        """The log marginal likelihood log p(y) of the model by bridge sampling (:mod:`rescuemeta.evidence`), from
        a fit on the same compiled graph as :meth:`sample` (no extra compile).

        Returns
        -------
        ((BridgeResult, mu draws), Diagnostics)
            ``BridgeResult.log_ml`` with its error ``cv`` (about the standard error of log_ml) and the posterior
            draws of mu (flattened); the fit's convergence diagnostics (not guarded here: the caller reports them).
        """
        from .evidence import bridge_sampling, log_density_function

        if self.backend != "nutpie":
            raise ValueError("marginal likelihoods need the nutpie backend (its compiled log density)")
        import nutpie

        compiled = self._compiled(data, tau_prior, effect_prior, baseline_prior, coef_prior)
        idata = nutpie.sample(compiled, draws=draws, tune=tune, chains=chains, seed=seed, progress_bar=False,
                              target_accept=target_accept, cores=min(chains, 2), save_warmup=False,
                              store_unconstrained=True)
        post = _drop_unused(_unpad(idata, data.k, None if data.X is None else data.X.shape[1]), data)
        diag = diagnose(post)
        ss = idata.sample_stats
        res = bridge_sampling(log_density_function(compiled), ss["unconstrained_draw"].values,
                              ss["logp"].values, rng=np.random.default_rng([seed, 29]))
        # padded studies of the normal model carry a constant likelihood N(0 | theta, PAD_SE^2): remove it
        res.log_ml -= (self._size(data) - data.k) * kinds.get(data.kind).pad_log_lik
        return (res, post.posterior["mu"].values.ravel()), diag

    def _run(self, data, tau_prior, effect_prior, baseline_prior, *, draws, tune, chains, seed, target_accept,
             coef_prior=None):
        if self.backend == "nutpie":
            import nutpie

            compiled = self._compiled(data, tau_prior, effect_prior, baseline_prior, coef_prior)
            idata = nutpie.sample(compiled, draws=draws, tune=tune, chains=chains, seed=seed,
                                  progress_bar=False, target_accept=target_accept, cores=min(chains, 2),
                                  save_warmup=False)
            return _drop_unused(_unpad(idata, data.k, None if data.X is None else data.X.shape[1]), data)
        if self.backend == "pymc":
            import pymc as pm

            model = build_model(data, tau_prior, effect_prior, baseline_prior, coef_prior=coef_prior)
            with model:
                return pm.sample(draws=draws, tune=tune, chains=chains, random_seed=seed, progressbar=False,
                                 target_accept=target_accept, cores=min(chains, 2), compute_convergence_checks=False)
        raise ValueError(f"unknown backend {self.backend!r}; choose nutpie or pymc")


def _advice(diag: Diagnostics, kind: str) -> str:
    """What a user can do about a failed guard (appended to the error message)."""
    tips = []
    if diag.divergences:
        tips.append("divergent transitions persisted at target_accept 0.99: with few studies the posterior of tau "
                    "near 0 (or a very heavy-tailed tau prior) has regions NUTS cannot explore reliably; a tau prior "
                    "with lighter tails helps" + ("" if kinds.get(kind).exact else
                                                   ", or --model normal, computed exactly without sampling"))
    if min(diag.ess_bulk_min, diag.ess_tail_min) < diag.ess_required or diag.rhat_max > RHAT_MAX:
        tips.append("more --draws (and --tune) raise the effective sample size")
    return (". " + "; ".join(tips)[0].upper() + "; ".join(tips)[1:]) if tips else ""


def _unpad(idata, k: int, n_coef: int | None = None):
    """Drop padded studies (index >= k) from every group that has a ``study`` dimension, and padded
    meta-regression coefficients (``coef`` index >= n_coef, ``slope`` index >= n_coef - 1)."""
    cuts = {"study": k}
    if n_coef is not None:
        cuts.update(coef=n_coef, slope=n_coef - 1)
    for name in list(idata.groups()):
        ds = idata[name]
        sel = {dim: slice(0, n) for dim, n in cuts.items() if dim in ds.dims and ds.sizes[dim] > n}
        if sel:
            setattr(idata, name, ds.isel(sel))  # (idata[name] = ... would list the group twice)
    return idata


def _drop_unused(idata, data: ModelData):
    """Drop what the shared binomial graph samples but this fit does not have: the baselines of a kind without
    control arms (``alpha``, ``b``: prior only) and the regression of a fit without moderators (``slopes``,
    ``beta``: prior only, ``mods_x`` being 0)."""
    unused = [] if kinds.get(data.kind).baseline_prior else ["alpha", "b"]
    if data.X is None:
        unused += ["slopes", "beta"]
    for g in [g for g in idata.groups() if g == "posterior" or g.startswith("warmup_posterior")]:
        if any(v in idata[g] for v in unused):
            setattr(idata, g, idata[g].drop_vars(unused, errors="ignore"))
    return idata


_DEFAULT_SAMPLERS: dict[str, Sampler] = {}


def default_sampler(backend: str = "nutpie") -> Sampler:
    """A process-wide :class:`Sampler` per backend, so that every fit in a session shares one compile cache."""
    if backend not in _DEFAULT_SAMPLERS:
        _DEFAULT_SAMPLERS[backend] = Sampler(backend=backend)
    return _DEFAULT_SAMPLERS[backend]
