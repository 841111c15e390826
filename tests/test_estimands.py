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


def test_proportion_fit_reports_both_rates():
    from rescuemeta.data import load_studies
    from rescuemeta.fit import FitConfig, fit

    from conftest import CI, ROOT

    res = fit(load_studies(ROOT / "data" / "studies.csv"),
              FitConfig(outcome="sich", model="proportion", draws=500 if CI else 1000))
    s = res.summary()
    assert s["rate"]["q50"] == pytest.approx(float(np.median(expit(res.draws("mu")))), rel=1e-9)
    mean_rate = res.draws("rate_mean")
    assert s["rate_mean"]["mean"] == pytest.approx(float(mean_rate.mean()), rel=1e-12)
    # sICH rates are low: spreading the studies raises the mean rate above the median study's
    assert s["rate_mean"]["q50"] > s["rate"]["q50"]
