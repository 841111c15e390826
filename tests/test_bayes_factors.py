"""Bayes factors and model averaging (issue 18), normal model: exact evidences against independent quadrature.

The references integrate the likelihood prod_i N(y_i; mu, s_i^2 + tau^2) over the priors with scipy's adaptive
quadrature (dblquad over (mu, tau), quad where one parameter is fixed), sharing no code with
rescuemeta.exact; relative tolerance 1e-6. Model averaging must reproduce the posterior model probabilities
computed by hand from those evidences (metaBMA's definition).
"""

import json
import math

import numpy as np
import pytest
from scipy import integrate, stats
from typer.testing import CliRunner

from rescuemeta.averaging import average, bf_words, model_probabilities
from rescuemeta.cli import app
from rescuemeta.data import load_studies
from rescuemeta.exact import NormalNormalPosterior
from rescuemeta.fit import FitConfig, fit
from rescuemeta.priors import parse

from conftest import ROOT

DATA = ROOT / "data" / "studies.csv"
runner = CliRunner()
Y = np.array([-0.9, -0.3, -0.6, 0.1, -1.2])
S = np.array([0.4, 0.3, 0.5, 0.35, 0.6])


def _lik(y, s, mu, tau):
    t2 = tau * tau
    out = 0.0
    for yi, si in zip(y.tolist(), s.tolist()):
        v = si * si + t2
        out += -0.5 * math.log(2 * math.pi * v) - 0.5 * (yi - mu) ** 2 / v
    return math.exp(out)


# the tau priors' densities written out here (not the package's code), and where to stop integrating
TAU_DENSITY = {
    "halfnormal(0.5)": (lambda t: 2 * math.exp(-0.5 * (t / 0.5) ** 2) / (0.5 * math.sqrt(2 * math.pi)), 6.0),
    "halfcauchy(0.5)": (lambda t: 2 / (math.pi * 0.5 * (1 + (t / 0.5) ** 2)), 60.0),
    "uniform(0, 2)": (lambda t: 0.5, 2.0),
}


def _norm_pdf(x, sd):
    return math.exp(-0.5 * (x / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


def _evidences(y, s, tau_prior="halfnormal(0.5)", mu_sd=4.0):
    """The four models' marginal likelihoods by adaptive quadrature (the halfcauchy tail beyond 60 holds 0.5% of
    its mass, where the likelihood is flat in mu's scale and negligible: < 1e-9 relative)."""
    ptau, hi = TAU_DENSITY[tau_prior]
    ev = {"fixed_null": _lik(y, s, 0.0, 0.0)}
    ev["fixed"] = integrate.quad(lambda m: _lik(y, s, m, 0.0) * _norm_pdf(m, mu_sd), -25, 25, epsabs=0,
                                 epsrel=1e-11, limit=200)[0]
    ev["random_null"] = integrate.quad(lambda t: _lik(y, s, 0.0, t) * ptau(t), 0, hi, epsabs=0, epsrel=1e-11,
                                       limit=400)[0]
    ev["random"] = integrate.dblquad(lambda m, t: _lik(y, s, m, t) * _norm_pdf(m, mu_sd) * ptau(t), 0, hi,
                                     -25, 25, epsabs=0, epsrel=1e-9)[0]
    return ev


@pytest.mark.parametrize("tau_prior", ["halfnormal(0.5)", "halfcauchy(0.5)", "uniform(0, 2)"])
def test_exact_bayes_factors_match_independent_quadrature(tau_prior):
    tp = parse(tau_prior, "tau")
    ex = NormalNormalPosterior(Y, S, tp, 0.0, 4.0)
    bf = ex.bayes_factors()
    ev = _evidences(Y, S, tau_prior)
    assert bf["log_evidence"] == pytest.approx(math.log(ev["random"]), rel=1e-6)
    assert bf["bf01_mu"] == pytest.approx(ev["random_null"] / ev["random"], rel=1e-6)
    assert bf["bf01_tau"] == pytest.approx(ev["fixed"] / ev["random"], rel=1e-6)
    # Savage-Dickey (valid: independent priors on mu and tau): posterior over prior density of mu at 0
    sd = float(np.ravel(ex.mu_pdf(0.0))[0]) / stats.norm.pdf(0, 0, 4)
    assert sd == pytest.approx(bf["bf01_mu"], rel=1e-6)


def test_model_averaging_reproduces_hand_computed_probabilities(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("study_id,outcome,events_treat,total_treat,events_control,total_control,measure,estimate,ci_low,"
                 "ci_high\n" + "".join(f"S{i},death,,,,,OR,{math.exp(y)},{math.exp(y - 1.959963984540054 * s)},"
                                       f"{math.exp(y + 1.959963984540054 * s)}\n" for i, (y, s) in enumerate(zip(Y, S))))
    table = load_studies(p)
    cfg = FitConfig("death", "normal")
    prior = {"fixed_null": 0.1, "fixed": 0.2, "random_null": 0.3, "random": 0.4}
    res = average(table, cfg, prior)
    ev = _evidences(Y, S, "halfnormal(0.5)")
    z = sum(prior[m] * ev[m] for m in ev)
    for m in ev:
        assert res["models"][m]["posterior"] == pytest.approx(prior[m] * ev[m] / z, rel=1e-6), m
        assert res["models"][m]["log_evidence"] == pytest.approx(math.log(ev[m]), rel=1e-6)
    post = {m: prior[m] * ev[m] / z for m in ev}
    bf_eff = ((post["fixed"] + post["random"]) / (post["fixed_null"] + post["random_null"])) / (0.6 / 0.4)
    bf_het = ((post["random"] + post["random_null"]) / (post["fixed"] + post["fixed_null"])) / (0.7 / 0.3)
    assert res["bf_inclusion_effect"] == pytest.approx(bf_eff, rel=1e-6)
    assert res["bf_inclusion_heterogeneity"] == pytest.approx(bf_het, rel=1e-6)
    # averaged P(OR < 1): the no-effect models give 0 (OR = 1 exactly), the fixed model its conjugate normal
    prec = 1 / 16 + np.sum(1 / S**2)
    p_fixed = stats.norm.cdf(0, np.sum(Y / S**2) / prec, 1 / math.sqrt(prec))
    p_random = res["models"]["random"]["probability"]
    assert res["averaged"]["probability"] == pytest.approx(post["fixed"] * p_fixed + post["random"] * p_random,
                                                           rel=1e-6)
    assert res["averaged"]["p_mu_zero"] == pytest.approx(post["fixed_null"] + post["random_null"], rel=1e-6)
    # equal prior odds: the inclusion BF is the ratio of summed evidences
    eq = model_probabilities({m: math.log(v) for m, v in ev.items()}, {m: 0.25 for m in ev})
    assert eq["bf_inclusion_effect"] == pytest.approx((ev["fixed"] + ev["random"]) / (ev["fixed_null"] +
                                                                                       ev["random_null"]), rel=1e-9)


def test_fit_json_carries_bayes_factors_and_says_when_it_cannot():
    r = runner.invoke(app, ["fit", "--data", str(DATA), "--outcome", "mortality", "--model", "normal", "--json"])
    d = json.loads(r.stdout)
    bf = d["bayes_factors"]
    assert bf["bf01_mu"] > 0 and bf["bf01_tau"] > 0 and "exact" in bf["method"]
    res = fit(load_studies(DATA), FitConfig("mortality", "normal"))
    assert bf["log_evidence"] == pytest.approx(res.exact.log_evidence(), rel=1e-12)
    nb = fit(load_studies(DATA), FitConfig("sich", "proportion", draws=200, seed=1)).bayes_factors(compute=False)
    assert nb["bf01_mu"] is None and "--bayes-factors" in nb["note"]  # bridge sampling on request only


def test_cli_average_and_bad_prior_probs():
    r = runner.invoke(app, ["average", "--data", str(DATA), "--outcome", "mortality", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert set(d["models"]) == {"fixed_null", "fixed", "random_null", "random"}
    assert sum(m["posterior"] for m in d["models"].values()) == pytest.approx(1.0)
    assert d["query"] == "OR < 1" and 0 <= d["averaged"]["probability"] <= 1
    assert d["averaged"]["or"]["q025"] <= d["averaged"]["or"]["q500"] <= d["averaged"]["or"]["q975"]
    r = runner.invoke(app, ["average", "--data", str(DATA), "--outcome", "mortality", "--prior-probs", "fixed=x"])
    assert r.exit_code == 2 and "MODEL=PROBABILITY" in r.stderr
    r = runner.invoke(app, ["average", "--data", str(DATA), "--outcome", "mortality", "--prior-probs", "other=1"])
    assert r.exit_code == 2 and "unknown model" in r.stderr
    assert bf_words(12) == "strong evidence for" and bf_words(1 / 5) == "moderate evidence against"
