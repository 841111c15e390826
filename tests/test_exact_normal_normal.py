"""Exact normal-normal posterior by quadrature (bayesmeta's method).

Reproduces Roever (2020), J Stat Softw 93(6), section 3 (Crins et al. 2014, IL-2RA vs control, acute
rejection, log OR with metafor's default continuity correction): mu ~ N(0, 4^2), tau ~ halfnormal(0.5):
posterior median tau 0.3445, median mu -1.5735, 95% interval about [-2.23, -0.93].
"""

import math

import numpy as np
import pytest
from scipy import integrate

from rescuemeta.effects import escalc
from rescuemeta.exact import NormalNormalPosterior
from rescuemeta.priors import parse

from conftest import load_dataset


@pytest.fixture(scope="module")
def crins():
    d = load_dataset("crins2014")
    es = escalc("OR", d["events_treat"], d["total_treat"], d["events_control"], d["total_control"])
    return NormalNormalPosterior(es.yi, np.sqrt(es.vi), parse("halfnormal(0.5)"), 0.0, 4.0)


def test_roever_2020_crins_example(crins):
    assert crins.tau_quantile(0.5) == pytest.approx(0.3445, abs=5e-5)
    assert crins.mu_quantile(0.5) == pytest.approx(-1.5735, abs=5e-5)
    assert crins.mu_quantile(0.025) == pytest.approx(-2.23, abs=0.01)
    assert crins.mu_quantile(0.975) == pytest.approx(-0.93, abs=0.01)


def test_density_normalised_and_cdf_consistent(crins):
    total = integrate.quad(lambda t: crins.tau_pdf(t)[0], 0, 20, limit=400)[0]
    assert total == pytest.approx(1.0, abs=1e-8)
    q = crins.tau_quantile(0.8)
    assert crins.tau_cdf(q) == pytest.approx(0.8, abs=1e-9)


def test_known_tau_gives_the_conjugate_answer():
    # a prior concentrated at tau ~ 0.2 (uniform(0.2, 0.2001)) makes mu | y the conjugate normal
    y = np.array([-0.5, 0.1, -0.3, -0.8])
    s = np.array([0.3, 0.4, 0.25, 0.5])
    post = NormalNormalPosterior(y, s, parse("uniform(0.2, 0.20001)"), 0.0, 4.0)
    v = s**2 + 0.2**2
    prec = 1 / 16 + np.sum(1 / v)
    mean = np.sum(y / v) / prec
    assert post.mu_quantile(0.5) == pytest.approx(mean, abs=1e-4)
    assert post.mu_quantile(0.975) == pytest.approx(mean + 1.959964 / math.sqrt(prec), abs=1e-4)
    assert post.predictive_quantile(0.975) == pytest.approx(mean + 1.959964 * math.sqrt(1 / prec + 0.04), abs=1e-4)


def test_mu_cdf_matches_brute_force_2d_integration():
    y = np.array([0.2, -0.4, 0.1])
    s = np.array([0.3, 0.3, 0.4])
    prior = parse("halfcauchy(0.5)")
    post = NormalNormalPosterior(y, s, prior, 0.0, 2.0)

    def joint(mu, tau):  # written out (scipy.stats per call is slow inside dblquad): half-Cauchy(0.5) x N(0, 2^2) x lik
        v = s**2 + tau**2
        return (2 / (math.pi * 0.5 * (1 + (tau / 0.5) ** 2)) * math.exp(-mu**2 / 8) / math.sqrt(8 * math.pi)
                * float(np.prod(np.exp(-0.5 * (y - mu) ** 2 / v) / np.sqrt(2 * math.pi * v))))

    z = integrate.dblquad(lambda mu, tau: joint(mu, tau), 0, 30, -8, 8, epsabs=1e-11)[0]
    below = integrate.dblquad(lambda mu, tau: joint(mu, tau), 0, 30, -8, 0.0, epsabs=1e-11)[0]
    assert post.mu_cdf(0.0) == pytest.approx(below / z, abs=1e-5)


def test_hdi_is_shortest_and_holds_its_mass(crins):
    lo, hi = crins.hdi("mu")
    assert crins.mu_cdf(hi) - crins.mu_cdf(lo) == pytest.approx(0.95, abs=1e-8)
    assert hi - lo <= crins.mu_quantile(0.975) - crins.mu_quantile(0.025) + 1e-9
    # at the ends of the shortest interval the density is equal (unimodal posterior)
    d = crins.mu_pdf([lo, hi])
    assert d[0] == pytest.approx(d[1], rel=1e-3)
    # on the OR scale: holds 95% and is shorter than exp of the log-scale HDI
    elo, ehi = crins.hdi("mu", transform=np.exp)
    assert crins.mu_cdf(np.log(ehi)) - crins.mu_cdf(np.log(elo)) == pytest.approx(0.95, abs=1e-8)
    assert ehi - elo < np.exp(hi) - np.exp(lo)
    # tau's posterior density is highest at 0 for this prior: the HDI starts at 0
    tlo, thi = crins.hdi("tau")
    assert tlo == 0.0 and crins.tau_cdf(thi) == pytest.approx(0.95, abs=1e-8)


def test_moments_match_numerical_integration(crins):
    grid = np.linspace(-8, 5, 20001)
    dens = crins.mu_pdf(grid)
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=1e-8)
    mean, sd = crins.moments("mu")
    assert mean == pytest.approx(np.trapezoid(grid * dens, grid), abs=1e-7)
    assert sd == pytest.approx(np.sqrt(np.trapezoid((grid - mean) ** 2 * dens, grid)), abs=1e-7)
    emean, esd = crins.moments("mu", "exp")
    assert emean == pytest.approx(np.trapezoid(np.exp(grid) * dens, grid), rel=1e-7)
    gm, gsd = crins.expect_moments("mu", np.exp)
    assert (gm, gsd) == pytest.approx((emean, esd), rel=1e-9)
    tgrid = np.linspace(1e-9, 4, 40001)
    assert crins.tau_moment(1) == pytest.approx(np.trapezoid(tgrid * crins.tau_pdf(tgrid), tgrid), abs=1e-7)


def test_study_shrinkage_at_known_tau():
    y = np.array([-0.5, 0.1, -0.3, -0.8])
    s = np.array([0.3, 0.4, 0.25, 0.5])
    post = NormalNormalPosterior(y, s, parse("uniform(0.2, 0.20001)"), 0.0, 4.0)
    tau2 = 0.2**2
    v = s**2 + tau2
    prec = 1 / 16 + np.sum(1 / v)
    m, vm = np.sum(y / v) / prec, 1 / prec
    for i in range(4):
        b = s[i] ** 2 / (s[i] ** 2 + tau2)
        mean = (1 - b) * y[i] + b * m
        var = s[i] ** 2 * tau2 / (s[i] ** 2 + tau2) + b**2 * vm
        got_mean, got_sd = post.moments(i)
        assert got_mean == pytest.approx(mean, abs=1e-4)
        assert got_sd == pytest.approx(math.sqrt(var), abs=1e-4)
        assert post.quantile(i, 0.5) == pytest.approx(mean, abs=1e-4)


def test_ratio_moments_that_do_not_exist_are_inf_without_warnings():
    """Two studies and a heavy-tailed tau prior: the predictive OR has no finite mean (E exp(theta_new) grows as
    exp(tau^2 / 2) under a prior reaching tau = 100s). We return inf, silently (JSON writes null), not overflow
    warnings; mu's ratio-scale moments stay finite."""
    import warnings

    post = NormalNormalPosterior(np.array([-0.4, 0.3]), np.array([0.5, 0.6]), parse("halfcauchy(5)"), 0.0, 4.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean, sd = post.moments("theta_new", "exp")
        mu_mean, mu_sd = post.moments("mu", "exp")
    assert mean == math.inf and sd == math.inf
    assert math.isfinite(mu_mean) and math.isfinite(mu_sd)


def test_predictive_density_is_the_derivative_of_its_cdf(crins):
    """The new-study effect's density (bayesmeta's dposterior(predict=TRUE)) integrates to 1 and is the slope of
    the predictive CDF."""
    post = crins
    lo, hi = post.predictive_quantile(1e-6), post.predictive_quantile(1 - 1e-6)
    total, _ = integrate.quad(lambda x: float(post.predictive_pdf(x)[0]), lo, hi, limit=200)
    assert total == pytest.approx(1 - 2e-6, abs=1e-7)
    for x in (post.predictive_quantile(q) for q in (0.1, 0.5, 0.9)):
        h = 1e-5
        slope = (post.predictive_cdf(x + h) - post.predictive_cdf(x - h)) / (2 * h)
        assert float(post.predictive_pdf(x)[0]) == pytest.approx(float(np.squeeze(slope)), rel=1e-6)
