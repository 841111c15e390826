"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari & Gelman 2018, arXiv:1804.06788) of the
contrast and proportion models under NUTS (nutpie).

For each simulated meta-analysis (k = 5 studies, 40-120 patients per arm), (mu, tau[, alpha]) are drawn from
the prior, counts from the binomial model, and the rank of the true value among 99 thinned posterior draws is
recorded. Under a correct model and sampler the ranks are uniform on 0..99.

Stated thresholds (each for mu and for tau):
* chi-square test of uniform ranks over 10 bins: p >= 0.001;
* coverage of central 90% intervals within 0.9 +- 3.29 * sqrt(0.09 / N) (a 99.9% binomial band).
CI runs N = 60 simulations per model with 2 chains x 300 draws after 300 tuning steps (90% band +-0.127; issue 19: 2 x 500
after 500 took 64 s against 41 s, and the statistics at 300 stayed well inside the thresholds over three seeds: chi-square
p 0.18-0.93, coverage within 0.05 of 0.9); the full check (marked slow) runs N = 500 with 4 chains x 1000 draws.

Priors for SBC must be proper and generate plausible data: tau ~ half-normal(0.5) (the package default),
mu ~ N(0, 1) (log OR) or N(-1, 1) (logit rate), alpha_i ~ N(-1, 0.75) (control risks mostly 10%-55%).
"""

import math

import pytest

from rescuemeta.priors import parse
from rescuemeta.sampling import default_sampler

from helpers import sbc

CASES = {
    "contrast": (parse("halfnormal(0.5)"), parse("normal(0, 1)", "effect"), parse("normal(-1, 0.75)", "effect")),
    "proportion": (parse("halfnormal(0.5)"), parse("normal(-1, 1)", "effect"), None),
}


def _check(res):
    band = 3.29 * math.sqrt(0.09 / res.n_sims)
    for name in ("mu", "tau"):
        p = res.chi2_pvalue(name)
        cov = res.coverage(name, 0.9)
        assert p >= 0.001, f"{name}: ranks not uniform (chi-square p = {p:.2g})"
        assert abs(cov - 0.9) <= band, f"{name}: 90% interval coverage {cov:.3f}"
    assert res.divergent <= 0.1 * res.n_sims, f"{res.divergent} of {res.n_sims} fits had divergences"


@pytest.mark.parametrize("kind", list(CASES))
def test_sbc_reduced(kind):
    tau, eff, base = CASES[kind]
    _check(sbc(kind, tau, eff, base, n_sims=60, draws=300, tune=300, chains=2, seed=20261125,
               sampler=default_sampler()))


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CASES))
def test_sbc_with_one_moderator(kind):
    """Issue 15: the meta-regression under NUTS, one numeric moderator (centred standard normal values, slope ~
    N(0, 0.5^2)), k = 8; the slope is ranked as well as mu and tau, with the same thresholds."""
    tau, eff, base = CASES[kind]
    res = sbc(kind, tau, eff, base, n_sims=100, k=8, draws=500, tune=500, chains=2, seed=20261126,
              sampler=default_sampler(), coef_prior=parse("normal(0, 0.5)", "effect"))
    _check(res)
    band = 3.29 * math.sqrt(0.09 / res.n_sims)
    assert res.chi2_pvalue("slope") >= 0.001 and abs(res.coverage("slope", 0.9) - 0.9) <= band


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(CASES))
def test_sbc_full(kind):
    tau, eff, base = CASES[kind]
    _check(sbc(kind, tau, eff, base, n_sims=500, draws=1000, tune=1000, chains=4, seed=7, sampler=default_sampler()))
