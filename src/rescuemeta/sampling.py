"""The sampling stage: NUTS through nutpie (default) or ``pm.sample``, a compile cache keyed by model
structure, and a convergence guard that never lets a bad fit pass silently.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import arviz as az
import numpy as np
import pymc as pm

from .errors import RescueMetaError
from .models import ModelData, build_model, prior_data, structure_key
from .priors import Prior

RHAT_MAX = 1.01
ESS_MIN = 400
EXIT_CONVERGENCE = 3


class ConvergenceError(RescueMetaError):
    """The sampler did not converge (after one retry with a higher target acceptance)."""

    exit_code = EXIT_CONVERGENCE

    def __init__(self, message: str, diagnostics: dict):
        self.diagnostics = diagnostics
        super().__init__(message)


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

    @property
    def ok(self) -> bool:
        return (self.rhat_max <= RHAT_MAX and self.ess_bulk_min >= self.ess_required
                and self.ess_tail_min >= self.ess_required and self.divergences == 0)

    def to_dict(self) -> dict:
        return {"rhat_max": self.rhat_max, "ess_bulk_min": self.ess_bulk_min, "ess_tail_min": self.ess_tail_min,
                "divergences": self.divergences, "ess_required": self.ess_required, "attempts": self.attempts,
                "target_accept": self.target_accept, "ok": self.ok}


def diagnose(idata, ess_min: float = ESS_MIN) -> Diagnostics:
    var_names = [v for v in ("mu", "tau", "z", "alpha") if v in idata.posterior]
    rhat = az.rhat(idata, var_names=var_names)
    ess_b = az.ess(idata, var_names=var_names, method="bulk")
    ess_t = az.ess(idata, var_names=var_names, method="tail")
    mx = lambda ds, f: float(f([float(f(ds[v].values)) for v in ds.data_vars]))  # noqa: E731
    div = int(idata.sample_stats["diverging"].values.sum()) if "diverging" in idata.sample_stats else 0
    required = float(ess_min)
    return Diagnostics(rhat_max=mx(rhat, np.nanmax), ess_bulk_min=mx(ess_b, np.nanmin),
                       ess_tail_min=mx(ess_t, np.nanmin), divergences=div, ess_required=required)


@dataclass
class Sampler:
    """NUTS with a compile cache.

    Compiled nutpie models are kept per structure (model kind, k, prior families); a new fit with other
    prior *values* on the same structure only swaps the ``pm.Data`` values (``with_data``), no recompile.
    ``compiles`` counts the compilations done, so tests and benchmarks can check that.
    """

    backend: str = "nutpie"
    _cache: dict = field(default_factory=dict)
    compiles: int = 0

    def _compiled(self, data: ModelData, tau_prior: Prior, effect_prior: Prior, baseline_prior: Prior | None):
        import nutpie

        key = (structure_key(data.kind, data.k, tau_prior, effect_prior, baseline_prior),
               tuple((n, np.asarray(v).tobytes()) for n, v in sorted(data.arrays.items())))
        if key not in self._cache:
            model = build_model(data, tau_prior, effect_prior, baseline_prior)
            self._cache[key] = nutpie.compile_pymc_model(model, freeze_model=False)
            self.compiles += 1
        compiled = self._cache[key]
        return compiled.with_data(**prior_data(tau_prior, effect_prior,
                                               baseline_prior if data.kind == "contrast" else None))

    def sample(self, data: ModelData, tau_prior: Prior, effect_prior: Prior, baseline_prior: Prior | None = None,
               *, draws: int = 1000, tune: int = 1000, chains: int = 4, seed: int = 1,
               target_accept: float = 0.8, guard: bool = True, ess_min: float = ESS_MIN):
        """Sample the posterior; retry once with target_accept 0.99 if the guard fails.

        Returns
        -------
        (arviz.InferenceData, Diagnostics)
            Raises :class:`ConvergenceError` (exit code 3) when the retry fails too and ``guard`` is set.
        """
        attempts = 0
        for ta in (target_accept, max(0.99, target_accept)):
            attempts += 1
            t0 = time.perf_counter()
            idata = self._run(data, tau_prior, effect_prior, baseline_prior, draws=draws, tune=tune,
                              chains=chains, seed=seed + attempts - 1, target_accept=ta)
            diag = diagnose(idata, ess_min)
            diag.attempts = attempts
            diag.target_accept = ta
            idata.attrs["sampling_seconds"] = time.perf_counter() - t0
            if diag.ok or not guard:
                return idata, diag
        raise ConvergenceError(
            f"sampling did not converge after {attempts} attempts: R-hat max {diag.rhat_max:.3f} (<= {RHAT_MAX}), "
            f"ESS bulk/tail min {diag.ess_bulk_min:.0f}/{diag.ess_tail_min:.0f} (>= {diag.ess_required:.0f}), "
            f"{diag.divergences} divergences", diag.to_dict())

    def _run(self, data, tau_prior, effect_prior, baseline_prior, *, draws, tune, chains, seed, target_accept):
        if self.backend == "nutpie":
            import nutpie

            compiled = self._compiled(data, tau_prior, effect_prior, baseline_prior)
            return nutpie.sample(compiled, draws=draws, tune=tune, chains=chains, seed=seed,
                                 progress_bar=False, target_accept=target_accept, cores=min(chains, 2))
        if self.backend == "pymc":
            model = build_model(data, tau_prior, effect_prior, baseline_prior)
            with model:
                return pm.sample(draws=draws, tune=tune, chains=chains, random_seed=seed, progressbar=False,
                                 target_accept=target_accept, cores=min(chains, 2), compute_convergence_checks=False)
        raise ValueError(f"unknown backend {self.backend!r}; choose nutpie or pymc")
