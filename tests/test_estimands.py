"""Stated estimands (issue 14): the proportion model's pooled rate expit(mu) is the median study's rate; the
population-mean rate E[expit(mu + tau z)] is reported beside it."""

import numpy as np
import pytest
from scipy import integrate
from scipy.special import expit

from rescuemeta.summaries import population_mean_rate


@pytest.mark.parametrize("mu, tau", [(-2.0, 0.0), (-2.0, 0.5), (0.3, 1.0), (-4.0, 2.5), (1.5, 4.0), (-6.0, 9.0)])
def test_population_mean_rate_is_the_integral_over_studies(mu, tau):
    ref, _ = integrate.quad(lambda z: expit(mu + tau * z) * np.exp(-z * z / 2) / np.sqrt(2 * np.pi), -40, 40,
                            epsabs=1e-14, epsrel=1e-13, limit=400)
    assert population_mean_rate(mu, tau) == pytest.approx(ref, abs=1e-10)


def test_population_mean_rate_is_vectorised_and_pulled_towards_one_half():
    mu = np.array([[-2.0, -1.0], [0.0, 2.0]])
    tau = np.array([[1.0, 1.0], [1.0, 1.0]])
    r = population_mean_rate(mu, tau)
    assert r.shape == (2, 2)
    assert np.all(np.where(mu < 0, r > expit(mu), r < expit(mu)) | (mu == 0))
