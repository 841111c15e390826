"""Exact normal-normal posterior by quadrature (bayesmeta's method).

Reproduces Roever (2020), J Stat Softw 93(6), section 3 (Crins et al. 2014, IL-2RA vs control, acute
rejection, log OR with metafor's default continuity correction): mu ~ N(0, 4^2), tau ~ halfnormal(0.5):
posterior median tau 0.3445, median mu -1.5735, 95% interval about [-2.23, -0.93].
"""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from conftest import load_dataset
from rescuemeta.effects import escalc
from rescuemeta.exact import NormalNormalPosterior
from rescuemeta.priors import parse


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

    def joint(mu, tau):
        return (np.exp(prior.logpdf(np.array([tau]))[0]) * stats.norm.pdf(mu, 0, 2)
                * np.prod(stats.norm.pdf(y, mu, np.sqrt(s**2 + tau**2))))

    z = integrate.dblquad(lambda mu, tau: joint(mu, tau), 0, 30, -8, 8, epsabs=1e-11)[0]
    below = integrate.dblquad(lambda mu, tau: joint(mu, tau), 0, 30, -8, 0.0, epsabs=1e-11)[0]
    assert post.mu_cdf(0.0) == pytest.approx(below / z, abs=1e-5)
