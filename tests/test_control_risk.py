"""What RR and RD are conditional on (issue 14, item 3). Every RR/RD/NNT states its control risk; by default it
is the median observed control-arm risk of the included studies, the same number for the contrast and the normal
model; a given risk, the per-draw mean of the study baselines (labelled ``mean-draws``) and the population-averaged
(marginal) RR of a model with hierarchical baselines (Warn, Thompson & Spiegelhalter 2002) are options."""

import json
import os

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit, logit
from typer.testing import CliRunner

from rescuemeta.cli import app
from rescuemeta.data import load_studies
from rescuemeta.errors import InputError
from rescuemeta.fit import FitConfig, fit
from rescuemeta.queries import probability
from rescuemeta.spec import load_primary
from rescuemeta.summaries import summarize

from conftest import ROOT

DATA = str(ROOT / "data" / "studies.csv")
TABLE = load_studies(DATA)
DRAWS = 500 if os.environ.get("CI") else 1000
runner = CliRunner()


def _observed_median(res):
    """The median control-arm risk of the rows analysed by their counts (a row analysed by its reported OR, here
    Mohammaden2023, is left out in both models)."""
    a = res.data.model_data.arrays
    if "ci" in a:
        counted = a["n2i"] > 0
        risks = a["ci"][counted] / a["n2i"][counted]
    else:  # the normal model keeps only counts in the selection
        sel = res.data.selection
        _, _, ci, n2i = sel.counts()
        risks = (np.asarray(ci) / np.asarray(n2i))[~sel.reported]
    risks = risks[(risks > 0) & (risks < 1)]
    return float(np.median(risks))


@pytest.fixture(scope="module")
def fits():
    out = {cr: fit(TABLE, FitConfig("mortality", "contrast", draws=DRAWS, seed=5, control_risk=cr))
           for cr in ("median", "mean-draws", "0.3")}
    out["normal"] = fit(TABLE, FitConfig("mortality", "normal"))
    return out


def test_default_is_the_median_observed_risk_for_every_model(fits):
    c, n = fits["median"], fits["normal"]
    assert c.control_risk.mode == n.control_risk.mode == "median"
    assert c.control_risk.value == n.control_risk.value == pytest.approx(_observed_median(c), rel=1e-15)
    for res in (c, n):
        s = res.summary()
        assert s["baseline_risk"] == {"value": c.control_risk.value, "mode": "median", "note": c.control_risk.text}
        assert "median observed control-arm risk" in s["estimand"]["rr"]
    # contrast: RR per draw at that fixed risk
    mu, p0 = c.draws("mu"), c.control_risk.value
    p1 = expit(logit(p0) + mu)
    assert c.summary()["rr"] == summarize(p1 / p0)
    # normal (exact): the RR quantiles are the OR quantiles mapped at the same risk (a monotone map)
    q = n.exact.quantile("mu", 0.5)
    assert n.summary()["rr"]["q50"] == pytest.approx(expit(logit(p0) + q) / p0, rel=1e-9)


def test_mean_draws_is_a_labelled_option(fits):
    r = fits["mean-draws"]
    post = r.idata.posterior
    counted = r.data.model_data.arrays["n2i"] > 0  # a reported row's baseline has no data: not averaged
    p0 = expit(post["alpha"].values[..., counted]).mean(axis=-1)
    p1 = expit(logit(p0) + post["mu"].values)
    s = r.summary()
    assert s["rr"] == summarize(p1 / p0)
    assert s["baseline_risk"]["mode"] == "mean-draws" and s["baseline_risk"]["q50"] == summarize(p0)["q50"]
    assert "per posterior draw" in s["estimand"]["rr"]


def test_a_given_risk_and_queries_state_their_risk(fits):
    r = fits["0.3"]
    assert r.control_risk.mode == "given" and r.control_risk.value == 0.3
    assert r.summary()["baseline_risk"]["value"] == 0.3
    mu = r.draws("mu")
    x = probability(r, "RR < 0.8")
    assert x["baseline_risk"] == 0.3 and x["baseline_risk_mode"] == "given"
    assert x["probability"] == pytest.approx(float((expit(logit(0.3) + mu) / 0.3 < 0.8).mean()), abs=1e-12)
    # an explicit baseline risk overrides the fit's, and says so
    y = probability(fits["median"], "RD < -0.05", baseline_risk=0.5)
    assert y["baseline_risk"] == 0.5 and y["baseline_risk_mode"] == "given"
    z = probability(fits["median"], "RR < 1")
    assert z["baseline_risk_mode"] == "median" and "median observed" in z["baseline_risk_note"]
    e = probability(fits["normal"], "NNT < 10")
    assert e["baseline_risk"] == fits["normal"].control_risk.value and e["baseline_risk_mode"] == "median"
    assert "baseline_risk_mode" not in probability(fits["median"], "OR < 1")  # the OR needs no control risk


@pytest.mark.parametrize("model, cr, needle", [
    ("normal", "marginal", "needs modelled study baselines"),
    ("normal", "mean-draws", "needs modelled study baselines"),
    ("proportion", "0.3", "applies to ratio models"),
    ("contrast", "0", "strictly between 0 and 1"),
    ("contrast", "1.5", "strictly between 0 and 1"),
    ("contrast", "average", "median, mean-draws, marginal or a risk"),
])
def test_control_risk_refusals(model, cr, needle):
    with pytest.raises(InputError) as e:
        FitConfig("mortality", model, control_risk=cr).validate()
    assert needle in e.value.message


def test_marginal_implies_hierarchical_baselines():
    assert FitConfig("mortality", "contrast", control_risk="marginal").baselines == "hierarchical"
    assert FitConfig("mortality", "contrast").baselines == "independent"
    with pytest.raises(InputError, match="control arms"):
        FitConfig("mortality", "proportion", baselines="hierarchical").validate()


@pytest.fixture(scope="module")
def marginal():
    return fit(TABLE, FitConfig("mortality", "contrast", draws=DRAWS, seed=5, control_risk="marginal"))


@pytest.mark.slow  # its own compiled structure (hierarchical baselines): ~30 s cold; the parameterisation is
# checked exactly in tests/test_parameterisation.py on every run
def test_marginal_rr_is_the_ratio_of_population_averaged_risks(marginal):
    """RR_marg = E[expit(alpha + theta)] / E[expit(alpha)] with alpha ~ N(m, s^2), theta ~ N(mu, tau^2): recomputed
    for 40 posterior draws by Monte Carlo over (alpha, theta) with 400,000 points each (MC error ~1e-3)."""
    r = marginal
    s = r.summary()
    assert s["diagnostics"]["ok"] and s["diagnostics"]["divergences"] == 0
    assert s["baseline_risk"]["mode"] == "marginal" and 0 < s["baseline_risk"]["q50"] < 1  # a posterior quantity
    assert "population-averaged" in s["estimand"]["rr"] and set(s["baselines"]) == {"alpha_mu", "alpha_sigma"}
    post = r.idata.posterior
    m, sd = post["alpha_mu"].values.ravel(), post["alpha_sigma"].values.ravel()
    mu, tau = post["mu"].values.ravel(), post["tau"].values.ravel()
    rr = r.draws("rr").ravel()
    rd = r.draws("rd").ravel()
    rng = np.random.default_rng(1)
    for i in rng.choice(m.size, 40, replace=False):
        a = rng.normal(m[i], sd[i], 400_000)
        t = rng.normal(mu[i], tau[i], 400_000)
        p_c, p_t = expit(a).mean(), expit(a + t).mean()
        assert rr[i] == pytest.approx(p_t / p_c, abs=0.01) and rd[i] == pytest.approx(p_t - p_c, abs=0.004)
    # the new-study version: theta_new in place of the distribution of effects
    p_c, p_t = r.marginal_risks(predictive=True)
    tn = r.idata.posterior_predictive["theta_new"].values.ravel()
    i = 7
    a = rng.normal(m[i], sd[i], 400_000)
    assert (p_t / p_c).ravel()[i] == pytest.approx(expit(a + tn[i]).mean() / expit(a).mean(), abs=0.01)


@pytest.mark.slow
def test_marginal_fit_keeps_the_conditional_or_and_has_a_proper_log_prior(marginal):
    r = marginal
    lp = r.idata.log_prior
    assert {"alpha", "alpha_mu", "alpha_sigma"} <= set(lp.data_vars)
    post = r.idata.posterior
    np.testing.assert_allclose(lp["alpha_sigma"].values, stats.halfnorm.logpdf(post["alpha_sigma"].values, scale=1))
    np.testing.assert_allclose(lp["alpha"].values, stats.norm.logpdf(post["alpha"].values,
                               post["alpha_mu"].values[..., None], post["alpha_sigma"].values[..., None]))
    # the OR is the same conditional (study-level) OR: exp(mu)
    assert r.summary()["or"] == summarize(np.exp(post["mu"].values))
    x = probability(r, "RR < 1")
    assert x["baseline_risk"] is None and x["baseline_risk_mode"] == "marginal"
    assert x["probability"] == pytest.approx(float((r.draws("rr") < 1).mean()), abs=1e-12)


def test_cli_control_risk(tmp_path):
    r = runner.invoke(app, ["prob", "RR < 1", "--data", DATA, "--outcome", "mortality", "--model", "normal",
                            "--control-risk", "0.25", "--json"])
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)[0]
    assert row["baseline_risk"] == 0.25 and row["baseline_risk_mode"] == "given"
    r = runner.invoke(app, ["fit", "--data", DATA, "--outcome", "mortality", "--model", "normal", "--control-risk",
                            "marginal"])
    assert r.exit_code == 2 and "needs modelled study baselines" in r.stderr
    p = tmp_path / "primary.toml"
    p.write_text('control_risk = "sometimes"\n')
    with pytest.raises(InputError, match="key 'control_risk'"):
        load_primary(p)
    p.write_text('control_risk = "marginal"\nmodels = ["contrast", "normal", "proportion"]\n')
    cfgs = {c.model: (c.control_risk, c.baselines) for c in load_primary(p).configs(["mortality"])}
    assert cfgs == {"contrast": ("marginal", "hierarchical"), "normal": ("median", "independent"),
                    "proportion": ("median", "independent")}
