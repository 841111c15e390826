"""Helpers the tests share: they exercise the package, so they are not part of it (NUTS on a reanalysis model,
simulation-based calibration, opening the report in a browser)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from rescuemeta.defaults import TARGET_ACCEPT
from rescuemeta.models import ModelData
from rescuemeta.priors import Prior
from rescuemeta.reanalyze import LogNormalPrior, PublishedEstimate
from rescuemeta.sampling import Sampler
from rescuemeta.simulate import simulate_counts


def check_against_nuts(est: PublishedEstimate, prior: LogNormalPrior, draws: int = 4000, seed: int = 1) -> np.ndarray:
    """Posterior draws of the log ratio from NUTS (nutpie) on the same normal-normal model (for tests)."""
    import nutpie
    import pymc as pm

    from rescuemeta.compiled import compile_pymc_model

    with pm.Model() as model:
        b = pm.Normal("log_ratio", prior.mean, prior.sd)
        pm.Normal("y", b, est.se, observed=est.y)
    compiled = compile_pymc_model(model)
    idata = nutpie.sample(compiled, draws=draws // 4, tune=1000, chains=4, seed=seed, progress_bar=False)
    return idata.posterior["log_ratio"].values


@dataclass
class SBCResult:
    """Ranks of the true values among thinned posterior draws, one row per simulated data set.

    ``ranks[name]`` takes values 0..``n_draws``; under a correct sampler and model they are uniform.
    ``divergent`` counts fits with any divergent transition (they are kept: dropping them would bias SBC).
    """

    ranks: dict
    n_draws: int
    n_sims: int
    divergent: int

    def chi2_pvalue(self, name: str, bins: int = 10) -> float:
        """Chi-square test of uniformity of ``ranks[name]`` over ``bins`` equal bins of the rank range.

        Returns
        -------
        float
            A small p-value (e.g. < 0.001) means the ranks are not uniform: the posterior is miscalibrated.
        """
        r = np.asarray(self.ranks[name])
        edges = np.linspace(0, self.n_draws + 1, bins + 1)
        counts, _ = np.histogram(r, bins=edges)
        return float(stats.chisquare(counts).pvalue)

    def coverage(self, name: str, level: float = 0.9) -> float:
        """Share of simulations whose central ``level`` interval contains the truth (should be ``level``)."""
        r = np.asarray(self.ranks[name]) / self.n_draws
        lo = (1 - level) / 2
        return float(np.mean((r >= lo) & (r <= 1 - lo)))


def sbc(kind: str, tau_prior: Prior, effect_prior: Prior, baseline_prior: Prior | None = None, *, n_sims: int = 100,
        k: int = 5, draws: int = 500, tune: int = 500, chains: int = 2, n_thin: int = 99, seed: int = 1,
        target_accept: float = TARGET_ACCEPT, sampler: Sampler | None = None,
        coef_prior: Prior | None = None) -> SBCResult:
    """Simulation-based calibration: draw (mu, tau[, alpha]) from the prior, data from the model, fit, and rank
    the truth among ``n_thin`` evenly thinned posterior draws. With ``coef_prior``, one numeric moderator
    (standard normal values, centred) with a slope drawn from that prior enters every study's effect, and the
    slope is ranked too (``ranks["slope"]``).

    Returns
    -------
    SBCResult
    """
    sampler = sampler or Sampler()
    rng = np.random.default_rng(seed)
    ranks: dict[str, list[int]] = {"mu": [], "tau": []} | ({"slope": []} if coef_prior is not None else {})
    divergent = 0
    for i in range(n_sims):
        mu = float(effect_prior.sample(rng, 1)[0])
        tau = float(tau_prior.sample(rng, 1)[0])
        alpha = baseline_prior.sample(rng, k) if (kind == "contrast" and baseline_prior is not None) else None
        truths = {"mu": mu, "tau": tau}
        if coef_prior is not None:
            x = rng.standard_normal(k)
            x -= x.mean()
            slope = float(coef_prior.sample(rng, 1)[0])
            truths["slope"] = slope
            md, _ = simulate_counts(kind, rng, mu=mu + slope * x, tau=tau, k=k, alpha=alpha)
            md = ModelData(md.kind, md.arrays, X=np.column_stack([np.ones(k), x]))
        else:
            md, _ = simulate_counts(kind, rng, mu=mu, tau=tau, k=k, alpha=alpha)
        idata, diag = sampler.sample(md, tau_prior, effect_prior, baseline_prior if kind == "contrast" else None,
                                     draws=draws, tune=tune, chains=chains, seed=seed * 100003 + i, guard=False,
                                     target_accept=target_accept, coef_prior=coef_prior)
        divergent += int(diag.divergences > 0)
        for name, truth in truths.items():
            post = idata.posterior["beta"].values[..., 1] if name == "slope" else idata.posterior[name].values
            x = post.ravel(order="F")  # interleave chains before thinning
            idx = np.linspace(0, x.size - 1, n_thin).round().astype(int)
            ranks[name].append(int(np.sum(x[idx] < truth)))
    return SBCResult({k_: np.array(v) for k_, v in ranks.items()}, n_thin, n_sims, divergent)


def browser_check(index_path, chromium: str | None = None, timeout: float = 120) -> dict:
    """Open the report in headless Chromium, as a user would from disk, and report what the page saw.

    Returns
    -------
    dict
        ``images`` (number of <img> on the page), ``broken`` (src of images that did not load),
        ``status`` (``ok`` when every image loaded), ``console`` (console messages and uncaught errors; an
        empty list is what a clean page gives). Raises FileNotFoundError when no Chromium is installed.
    """
    import re
    import shutil
    import subprocess

    exe = chromium or shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if exe is None:
        raise FileNotFoundError("no chromium on PATH (Debian: apt-get install chromium)")
    url = Path(index_path).resolve().as_uri()
    p = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                        "--virtual-time-budget=10000", "--dump-dom", url], capture_output=True, text=True,
                       timeout=timeout)
    m = re.search(r'<div id="img-check" data-status="(\w+)" data-images="(\d+)">([^<]*)</div>', p.stdout)
    console = [ln for ln in p.stderr.splitlines() if ":CONSOLE" in ln]
    if m is None:
        return {"status": "no-result", "images": 0, "broken": [], "console": console, "returncode": p.returncode}
    return {"status": m.group(1), "images": int(m.group(2)), "broken": m.group(3).split(), "console": console,
            "returncode": p.returncode}
