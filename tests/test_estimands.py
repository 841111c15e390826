"""Stated estimands (issue 14): the proportion model's pooled rate expit(mu) is the median study's rate; the
population-mean rate E[expit(mu + tau z)] is reported beside it."""

import numpy as np
import pytest
from scipy import integrate
from scipy.special import expit

from rescuemeta.summaries import population_mean_rate


@pytest.mark.parametrize("mu, tau", [(-2.0, 0.0), (-2.0, 0.5), (0.3, 1.0), (-4.0, 2.5), (1.5, 4.0), (-6.0, 9.0),
                                     (-1.0, 13.0)])
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


def test_absolute_effects_at_assumed_control_risks_exact():
    """GRADE absolute effects from an exact fit: the treatment risk at each assumed control risk is the transformed
    quantile of the pooled log ratio (OR: expit(logit p0 + mu); RR: p0 exp(mu)); default risks are the lowest,
    median and highest control-arm risk of the included studies; the NNT's sense follows the declared direction."""
    from scipy.special import logit

    from rescuemeta.data import load_studies
    from rescuemeta.fit import FitConfig, fit

    from conftest import DATASETS

    table = load_studies(DATASETS / "bcg_metafor.csv")
    res = fit(table, FitConfig(outcome="bcg_metafor", model="normal", measure="OR", draws=200))
    f = table.frame
    risks = (f["events_control"] / f["total_control"]).astype(float)
    acrs, labels, _ = res.assumed_control_risks()
    assert acrs == pytest.approx([risks.min(), risks.median(), risks.max()])
    ab = res.absolute()
    assert [a["acr"] for a in ab] == pytest.approx(acrs) and labels[1].startswith("moderate")
    for a in ab:
        p0 = a["acr"]
        for key, q in (("q025", 0.025), ("q50", 0.5), ("q975", 0.975)):
            want = 1000 * expit(logit(p0) + res.exact.quantile("mu", q))
            assert a["treatment_per_1000"][key] == pytest.approx(want, rel=1e-12)
            assert a["rd_per_1000"][key] == pytest.approx(want - 1000 * p0, rel=1e-9)
        assert a["nnt"]["sense"] == "NNTB"  # BCG vaccination lowers TB risk; fewer events are better (undescribed)
        assert a["nnt"]["value"] == pytest.approx(1000 / abs(a["rd_per_1000"]["q50"]))
    rr = fit(table, FitConfig(outcome="bcg_metafor", model="normal", measure="RR", draws=200)).absolute([0.9])
    assert rr[0]["treatment_per_1000"]["q975"] <= 1000 and rr[0]["label"] == "0.9 (given)"


def test_absolute_effects_cli_json_and_prob_context():
    import json

    from typer.testing import CliRunner

    from rescuemeta.cli import app

    from conftest import DATASETS

    runner = CliRunner()
    bcg = str(DATASETS / "bcg_metafor.csv")
    r = runner.invoke(app, ["fit", "--data", bcg, "--model", "normal", "--acr", "0.01,0.05", "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert [a["acr"] for a in s["absolute"]] == [0.01, 0.05] and s["acr"]["chosen_as"] == "given (--acr)"
    assert "absolute" in s["estimand"] and s["direction"].startswith("lower")
    bad = runner.invoke(app, ["fit", "--data", bcg, "--model", "normal", "--acr", "0.2,1.5"])
    assert bad.exit_code == 2 and "strictly between 0 and 1" in bad.output
    p = runner.invoke(app, ["prob", "--data", bcg, "--model", "normal", "RR < 1", "--json"])
    assert p.exit_code == 0, p.output
    row = json.loads(p.stdout)[0]
    assert row["outcome"] == "bcg_metafor" and row["model"] == "normal" and row["priors"]["tau"] == "halfnormal(0.5)"
