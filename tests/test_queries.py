"""Probability-of-benefit queries (`rescuemeta prob`): grammar, agreement with direct computation from the
posterior draws (NUTS) and from the closed form (exact normal-normal), MCSE, refusal after a failed guard."""

import json
import math

import arviz as az
import numpy as np
import pytest
from scipy.special import expit, logit
from typer.testing import CliRunner

from rescuemeta.cli import app
from rescuemeta.data import load_studies
from rescuemeta.errors import InputError
from rescuemeta.fit import FitConfig, fit
from rescuemeta.queries import parse_query, probability

from conftest import ROOT

runner = CliRunner()
DATA = str(ROOT / "data" / "studies.csv")
TABLE = load_studies(DATA)


@pytest.fixture(scope="module")
def contrast_fit():
    return fit(TABLE, FitConfig("mortality", "contrast", seed=21))


@pytest.fixture(scope="module")
def exact_fit():
    return fit(TABLE, FitConfig("mortality", "normal", measure="OR"))


@pytest.mark.parametrize("text, scale, op, value", [
    ("RR < 1", "RR", "<", 1.0), ("rr<=0.8", "RR", "<=", 0.8), ("OR > 1.5", "OR", ">", 1.5),
    ("RD < -0.05", "RD", "<", -0.05), ("RD < -5%", "RD", "<", -0.05), ("NNT < 10", "NNT", "<", 10.0),
    ("tau > 0.5", "TAU", ">", 0.5), ("rate >= 40%", "RATE", ">=", 0.4), ("  NNH>1e2 ", "NNH", ">", 100.0),
])
def test_grammar_accepts(text, scale, op, value):
    q = parse_query(text)
    assert (q.scale, q.op) == (scale, op) and q.value == pytest.approx(value)


@pytest.mark.parametrize("text", ["RR << 1", "RR < ", "< 1", "HR < 1", "RR < abc", "RR = 1", "RR < -1", "OR < 0",
                                  "tau > -1", "rate > 1.5", "RR < 5%", "RD < -2", "", "P(RR < 1)"])
def test_grammar_rejects_with_the_grammar(text):
    with pytest.raises(InputError) as e:
        parse_query(text)
    assert "SCALE OP VALUE" in str(e.value) or "between" in str(e.value) or "positive" in str(e.value) \
        or "'%'" in str(e.value) or ">= 0" in str(e.value)


def _manual(contrast_fit, predictive=False, p0=None):
    post = contrast_fit.idata.posterior
    eff = contrast_fit.idata.posterior_predictive["theta_new"].values if predictive else post["mu"].values
    base = contrast_fit.control_risk.value if p0 is None else p0  # default: the median observed control risk
    p1 = expit(logit(base) + eff)
    return {"OR": np.exp(eff), "RR": p1 / base, "RD": p1 - base, "benefit": base - p1}  # mortality: fewer is better


@pytest.mark.parametrize("predictive", [False, True])
@pytest.mark.parametrize("p0", [None, 0.3])
def test_probabilities_equal_direct_computation_from_draws(contrast_fit, predictive, p0):
    m = _manual(contrast_fit, predictive, p0)
    cases = {"RR < 1": m["RR"] < 1, "RR < 0.8": m["RR"] < 0.8, "OR > 1.5": m["OR"] > 1.5, "RD < -0.05": m["RD"] < -0.05,
             "NNT < 10": m["benefit"] > 0.1, "NNH < 20": -m["benefit"] > 0.05}
    for text, ind in cases.items():
        r = probability(contrast_fit, text, predictive=predictive, baseline_risk=p0)
        assert r["probability"] == pytest.approx(float(ind.mean()), abs=1e-15), text
        assert r["draws"] == ind.size == 4000
        if 0 < ind.mean() < 1:
            assert r["mcse"] == pytest.approx(float(np.asarray(az.mcse(ind.astype(float), method="mean")).ravel()[0]))
        assert r["predictive"] is predictive
        assert r["baseline_risk"] == (contrast_fit.control_risk.value if p0 is None else p0)


def test_tau_query(contrast_fit):
    tau = contrast_fit.idata.posterior["tau"].values
    assert probability(contrast_fit, "tau > 0.5")["probability"] == pytest.approx(float((tau > 0.5).mean()))
    with pytest.raises(InputError):
        probability(contrast_fit, "tau > 0.5", predictive=True)


def test_direction_flips_nnt(contrast_fit):
    a = probability(contrast_fit, "NNT < 10")["probability"]
    b = probability(contrast_fit, "NNH < 10", direction="higher")["probability"]
    assert a == b


def test_proportion_rate_query():
    res = fit(TABLE, FitConfig("sich", "proportion", seed=3))
    mu = res.idata.posterior["mu"].values
    assert probability(res, "rate > 0.1")["probability"] == pytest.approx(float((expit(mu) > 0.1).mean()))
    tn = res.idata.posterior_predictive["theta_new"].values
    assert probability(res, "rate > 10%", predictive=True)["probability"] == pytest.approx(
        float((expit(tn) > 0.1).mean()))
    with pytest.raises(InputError, match="not available for the proportion model"):
        probability(res, "RR < 1")


def _iid_exact_draws(ex, n=400_000, seed=5, predictive=False):
    """Independent draws from the exact posterior: tau from the quadrature nodes (weights), mu | tau normal."""
    t, w, m, v = ex._grid
    rng = np.random.default_rng(seed)
    j = rng.choice(len(t), size=n, p=w / w.sum())
    var = v[j] + (t[j] ** 2 if predictive else 0)
    return rng.normal(m[j], np.sqrt(var)), t[j]


@pytest.mark.parametrize("predictive", [False, True])
def test_exact_probabilities_match_independent_draws(exact_fit, predictive):
    """Each scale's threshold inversion (RR and RD from a log OR at p0, NNT via RD) against brute force."""
    ex = exact_fit.exact
    mu, tau = _iid_exact_draws(ex, predictive=predictive)
    for p0 in (None, 0.25):
        base = exact_fit.control_risk.value if p0 is None else p0
        p1 = expit(logit(base) + mu)
        brute = {"OR < 0.7": np.exp(mu) < 0.7, "RR < 0.8": p1 / base < 0.8, "RR >= 1": p1 / base >= 1,
                 "RD < -0.05": p1 - base < -0.05, "RD > 0.02": p1 - base > 0.02, "NNT < 10": base - p1 > 0.1,
                 "NNT > 20": ~(base - p1 > 0.05), "NNH < 25": p1 - base > 0.04}
        if not predictive:
            brute["tau > 0.3"] = tau > 0.3
        for text, ind in brute.items():
            r = probability(exact_fit, text, predictive=predictive, baseline_risk=p0)
            se = math.sqrt(max(ind.mean() * (1 - ind.mean()), 1e-6) / ind.size)
            assert r["probability"] == pytest.approx(float(ind.mean()), abs=5 * se + 2e-3), (text, p0)
            assert r["mcse"] == 0.0 and r["draws"] is None and r["method"] == "exact"


def test_exact_probability_is_the_closed_form(exact_fit):
    ex = exact_fit.exact
    assert probability(exact_fit, "OR < 0.8")["probability"] == pytest.approx(ex.mu_cdf(math.log(0.8)), abs=1e-14)
    assert probability(exact_fit, "OR > 0.8", predictive=True)["probability"] == pytest.approx(
        1 - ex.predictive_cdf(math.log(0.8)), abs=1e-14)


@pytest.mark.slow  # 2500 draws per chain on its own (normal) graph, ~50 s cold; test_nuts_vs_exact checks NUTS vs exact
def test_exact_and_nuts_normal_model_agree(exact_fit):
    nuts = fit(TABLE, FitConfig("mortality", "normal", measure="OR", method="nuts", draws=2500, seed=8))
    for text in ("OR < 1", "OR < 0.6", "RR < 0.8", "RD < -0.1", "tau > 0.3"):
        a = probability(exact_fit, text)["probability"]
        b = probability(nuts, text)
        assert abs(a - b["probability"]) <= 4 * b["mcse"] + 1e-3, (text, a, b)


def test_refuses_a_fit_that_failed_its_guard(contrast_fit):
    from dataclasses import replace

    bad = replace(contrast_fit.diagnostics, divergences=3)
    failed = replace(contrast_fit, diagnostics=bad)
    with pytest.raises(InputError, match="failed its convergence guard"):
        probability(failed, "RR < 1")


def test_cli_prob_json_contract():
    r = runner.invoke(app, ["prob", "--data", DATA, "--outcome", "mortality", "RR < 1", "RR < 0.8", "OR > 1.5",
                            "RD < -0.05", "NNT < 10", "--seed", "21", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [x["query"] for x in rows] == ["RR < 1", "RR < 0.8", "OR > 1.5", "RD < -0.05", "NNT < 10"]
    for x in rows:
        assert {"query", "scale", "probability", "mcse", "draws", "predictive", "baseline_risk"} <= set(x)
        assert 0 <= x["probability"] <= 1 and x["draws"] == 4000
    r = runner.invoke(app, ["prob", "--data", DATA, "--outcome", "mortality", "--model", "normal", "--measure", "RR",
                            "RR < 0.8", "--predictive", "--baseline-risk", "0.3", "--json"])
    x = json.loads(r.stdout)[0]
    assert x["mcse"] == 0 and x["draws"] is None and x["predictive"] and x["baseline_risk"] == 0.3


@pytest.mark.parametrize("args, code, needle", [
    (["RR <> 1"], 2, "SCALE OP VALUE"),
    (["RR < 1", "--baseline-risk", "1.2"], 2, "--baseline-risk"),
    (["rate > 0.4"], 2, "not available for the contrast model"),
    (["RR < 1", "--direction", "up"], 2, "--direction"),
    (["RR < 1", "--draws", "10", "--tune", "20", "--chains", "2"], 3, "no probabilities are reported"),
])
def test_cli_prob_errors(args, code, needle):
    r = runner.invoke(app, ["prob", "--data", DATA, "--outcome", "sich", *args])
    assert r.exit_code == code, r.output
    assert needle in r.output
    assert "Traceback" not in r.output
