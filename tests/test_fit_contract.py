"""`rescuemeta fit`: the JSON contract, natural-scale quantities recomputed from the saved draws, the NetCDF
groups (az.psens works on them), the exact path of the normal model, --all, reproducibility, and failures."""

import copy
import json

import arviz as az
import numpy as np
import pytest
from scipy import stats
from scipy.special import expit, logit
from typer.testing import CliRunner

from rescuemeta.cli import app
from rescuemeta.data import load_studies
from rescuemeta.fit import FitConfig, fit, prepare
from rescuemeta.summaries import STAT_KEYS, summarize

from conftest import ROOT

runner = CliRunner()
DATA = str(ROOT / "data" / "studies.csv")
DRAWS = "1000"


def _run(*args):
    r = runner.invoke(app, list(args))
    return r


@pytest.fixture(scope="module")
def mortality_fit(tmp_path_factory):
    out = tmp_path_factory.mktemp("fit")
    r = _run("fit", "--data", DATA, "--outcome", "mortality", "--model", "contrast", "--draws", DRAWS, "--seed", "3",
             "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout), out


def _is_stat(d, infinite_moments_allowed=False):
    """A summary block; ``infinite_moments_allowed``: the mean or SD may be null (a moment that does not exist,
    e.g. the SD of a new study's ratio when E[exp(2 theta_new)] diverges under the tau prior)."""
    if not (isinstance(d, dict) and set(STAT_KEYS) <= set(d) and d["q025"] <= d["q50"] <= d["q975"]
            and d["hdi_low"] <= d["hdi_high"]):
        return False
    if d["sd"] is None or d["mean"] is None:
        return infinite_moments_allowed
    return d["sd"] >= 0


def test_contract_keys_contrast(mortality_fit):
    s, _ = mortality_fit
    for key in ("mu", "tau", "or", "rr", "rd", "or_new", "rr_new", "rd_new", "theta_new"):
        assert _is_stat(s[key]), key
    # RR and RD state the control risk they are conditional on: by default the median observed one
    assert s["baseline_risk"]["mode"] == "median" and 0 < s["baseline_risk"]["value"] < 1
    assert "median observed control-arm risk" in s["baseline_risk"]["note"]
    assert "median observed control-arm risk" in s["estimand"]["rr"]
    assert set(s["diagnostics"]) >= {"rhat_max", "ess_bulk_min", "ess_tail_min", "divergences"}
    assert s["diagnostics"]["divergences"] == 0 and s["diagnostics"]["rhat_max"] <= 1.01
    assert s["k"] == 5 and s["outcome"] == "mortality" and s["model"] == "contrast"
    assert s["priors"] == {"tau": "halfnormal(0.5)", "tau_scale": "tau", "effect": "normal(0, 4)",
                           "baseline": "normal(0, 10)"}
    assert s["seconds"] > 0
    assert [x["study_id"] for x in s["studies"]] == s["inclusion"]["included"]
    assert all(_is_stat(x["or"]) and _is_stat(x["theta"]) for x in s["studies"])
    assert "30" in s["evidence_note"]


def test_natural_scales_recomputed_from_saved_draws(mortality_fit):
    """Every natural-scale number in the JSON equals the same function applied to the NetCDF draws."""
    s, out = mortality_fit
    idata = az.from_netcdf(out / "mortality_contrast.nc")
    mu = idata.posterior["mu"].values
    # the control risk: the median of the included studies' observed control-arm risks
    y_c, n_c = idata.observed_data["y_control"].values, idata.constant_data["n_control"].values
    counted = n_c > 0  # a row analysed by its reported OR has no control arm in the model
    assert counted.sum() == len(n_c) - s["inclusion"]["k_reported"]
    p0 = float(np.median(y_c[counted] / n_c[counted]))
    assert s["baseline_risk"]["value"] == pytest.approx(p0, rel=1e-15)
    p1 = expit(logit(p0) + mu)
    theta_new = idata.posterior_predictive["theta_new"].values
    p1_new = expit(logit(p0) + theta_new)
    expected = {"mu": mu, "or": np.exp(mu), "rr": p1 / p0, "rd": p1 - p0,
                "or_new": np.exp(theta_new), "rr_new": p1_new / p0, "rd_new": p1_new - p0}
    for key, draws in expected.items():
        for stat, v in summarize(draws).items():
            assert s[key][stat] == pytest.approx(v, rel=1e-12, abs=1e-14), (key, stat)
    # theta_new really is mu + tau * N(0, 1): standardised residuals are standard normal
    zres = ((theta_new - mu) / idata.posterior["tau"].values).ravel()
    assert abs(zres.mean()) < 0.06 and abs(zres.std() - 1) < 0.05
    # the shrunken study effects are the posterior theta_i
    th = idata.posterior["theta"].values
    for i, st in enumerate(s["studies"]):
        assert st["or"]["q50"] == pytest.approx(float(np.quantile(np.exp(th[..., i]), 0.5)), rel=1e-12)


def test_netcdf_groups_attrs_and_psens(mortality_fit):
    _, out = mortality_fit
    idata = az.from_netcdf(out / "mortality_contrast.nc")
    for g in ("posterior", "posterior_predictive", "log_likelihood", "log_prior", "observed_data", "constant_data",
              "sample_stats"):
        assert g in idata.groups(), g
    assert not [g for g in idata.groups() if g.startswith("warmup")]
    a = idata.attrs
    assert a["tau_prior"] == "halfnormal(0.5)" and a["effect_prior"] == "normal(0, 4)"
    assert a["seed"] == 3 and len(a["data_sha256"]) == 64
    assert {"pymc", "arviz", "nutpie", "rescuemeta"} <= set(json.loads(a["versions"]))
    assert list(idata.posterior["study"].values) == json.loads(a["study_ids"])
    sens = az.psens(idata, component="prior", var_names=["mu", "tau"])
    assert np.all(np.isfinite([float(sens["mu"]), float(sens["tau"])]))
    # power-scaling only mu's prior, N(0, 4^2), barely moves mu (a weak prior: sensitivity far below the
    # 0.05 that psens calls informative); tau's half-normal(0.5) with 5 studies is informative about tau
    mu_only = az.psens(idata, component="prior", component_var_names=["mu"], var_names=["mu", "tau"])
    tau_only = az.psens(idata, component="prior", component_var_names=["tau"], var_names=["mu", "tau"])
    assert float(mu_only["mu"]) < 0.01
    assert float(tau_only["tau"]) > 0.05


def test_fit_cache_round_trips_every_group_exactly(mortality_fit, tmp_path):
    """The fit cache (.npz, no pickle) gives back the NetCDF's InferenceData: the same groups, variables, dims,
    coordinates (study names as text), values bit for bit and attributes."""
    from rescuemeta.fit import load_draws, save_draws

    _, out = mortality_fit
    idata = az.from_netcdf(out / "mortality_contrast.nc")
    back = load_draws(save_draws(idata, tmp_path / "x.npz"))
    assert back.groups() == idata.groups()
    for g in idata.groups():
        a, b = idata[g], back[g]
        assert list(a.data_vars) == list(b.data_vars), g
        for v in a.data_vars:
            assert a[v].dims == b[v].dims and np.array_equal(a[v].values, b[v].values, equal_nan=a[v].dtype.kind == "f"), (g, v)
        for c in a.coords:
            assert [str(x) for x in a[c].values] == [str(x) for x in b[c].values], (g, c)
    assert back.attrs["tau_prior"] == idata.attrs["tau_prior"] and back.attrs["seed"] == idata.attrs["seed"]
    assert not list(tmp_path.glob("*.part"))


def test_log_likelihood_and_log_prior_match_scipy():
    """Our numpy log_likelihood / log_prior equal scipy's densities at the posterior draws (binomial arms, the
    reported row's normal likelihood, the priors of mu and tau)."""
    table = load_studies(DATA)
    cfg = FitConfig("sich", "contrast", draws=1000, seed=4)
    res = fit(table, cfg)
    a = prepare(table, cfg).model_data.arrays
    post = res.idata.posterior
    theta, alpha = post["theta"].values, post["alpha"].values
    theirs = (stats.binom.logpmf(a["ci"], a["n2i"], expit(alpha))
              + stats.binom.logpmf(a["ai"], a["n1i"], expit(alpha + theta)))
    assert a["est_mask"].sum() == 1  # PC-SEARCH's adjusted OR: a normal likelihood on theta_i, not its counts
    m = a["est_mask"] > 0
    theirs = np.where(m, stats.norm.logpdf(a["est_y"], theta, a["est_s"]), theirs)
    np.testing.assert_allclose(res.idata.log_likelihood["y"].values, theirs, rtol=1e-10, atol=1e-10)
    # mu is sampled through a standardised variable (models._pooled_effect): its prior, N(0, 4^2); tau's half-N(0.5)
    np.testing.assert_allclose(res.idata.log_prior["mu"].values, stats.norm.logpdf(post["mu"].values, 0, 4),
                               rtol=1e-12)
    np.testing.assert_allclose(res.idata.log_prior["tau"].values, stats.halfnorm.logpdf(post["tau"].values, scale=0.5),
                               rtol=1e-10)


def test_proportion_contract():
    r = _run("fit", "--data", DATA, "--outcome", "sich", "--model", "proportion", "--draws", DRAWS, "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    for key in ("mu", "tau", "rate", "rate_new", "theta_new"):
        assert _is_stat(s[key]), key
    assert "or" not in s and s["k"] == 11
    assert s["rate"]["q50"] == pytest.approx(float(expit(s["mu"]["q50"])), rel=2e-3)
    assert s["rate_new"]["q975"] - s["rate_new"]["q025"] > s["rate"]["q975"] - s["rate"]["q025"]
    assert all(_is_stat(x["rate"]) for x in s["studies"])
    # stated estimands (issue 14): 'rate' is the median study's, 'rate_mean' the population mean E[expit(mu + tau z)],
    # which the spread of low sICH rates pulls above the median study's
    assert _is_stat(s["rate_mean"]) and s["rate_mean"]["q50"] > s["rate"]["q50"]


@pytest.mark.parametrize("measure", ["OR", "RR"])
def test_normal_model_exact_agrees_with_nuts(measure):
    base = ["fit", "--data", DATA, "--outcome", "mortality", "--model", "normal", "--measure", measure, "--json"]
    r = _run(*base)
    assert r.exit_code == 0, r.output
    ex = json.loads(r.stdout)
    assert ex["method"] == "exact" and ex["diagnostics"]["rhat_max"] is None
    ratio = measure.lower()
    for key in ("mu", "tau", ratio, f"{ratio}_new", "rd", "rd_new"):
        assert _is_stat(ex[key], infinite_moments_allowed=key == f"{ratio}_new"), key
    # quantiles of the ratio are exp of quantiles of mu (exact, monotone)
    assert ex[ratio]["q50"] == pytest.approx(np.exp(ex["mu"]["q50"]), rel=1e-9)
    r = _run(*base, "--nuts", "--draws", "1000", "--seed", "5")
    assert r.exit_code == 0, r.output
    nu = json.loads(r.stdout)
    assert nu["method"] == "nuts"
    for key in ("mu", "tau"):
        for stat in ("mean", "q50"):
            assert nu[key][stat] == pytest.approx(ex[key][stat], abs=4 * nu[key]["sd"] / np.sqrt(1000)), (key, stat)
    assert nu[ratio]["q50"] == pytest.approx(ex[ratio]["q50"], rel=0.05)


def test_fit_all_json_lists_every_outcome_and_model():
    r = _run("fit", "--all", "--data", DATA, "--draws", "1000", "--json")
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    table = load_studies(DATA)
    assert {(x["outcome"], x["model"]) for x in rows} == {(o, m) for o in table.outcomes
                                                          for m in ("contrast", "proportion")}
    unavailable = [x for x in rows if "unavailable" in x]
    assert [(x["outcome"], x["model"]) for x in unavailable] == [("reocclusion", "contrast")]
    for x in rows:
        if "unavailable" not in x:
            assert x["diagnostics"]["divergences"] == 0 and x["diagnostics"]["ok"]


def test_fit_all_table_has_frequentist_and_abstract_columns():
    r = _run("fit", "--all", "--data", DATA, "--abstract", str(ROOT / "data" / "abstract_estimates.csv"))
    assert r.exit_code == 0, r.output
    assert "frequentist" in r.stdout and "abstract (k=30)" in r.stdout and "not the seed abstract's 30" in r.stdout
    assert "1.85 (1.34–2.65)" in r.stdout  # the abstract's FI RR sits beside ours


def test_same_seed_same_numbers():
    args = ["fit", "--data", DATA, "--outcome", "functional_independence", "--draws", "1000", "--seed", "9", "--json"]
    a, b = json.loads(_run(*args).stdout), json.loads(_run(*args).stdout)
    a.pop("seconds"), b.pop("seconds")
    assert a == b
    c = json.loads(_run(*args[:-2], "10", "--json").stdout)
    assert c["mu"]["mean"] != a["mu"]["mean"]


def test_convergence_failure_exits_3_with_diagnostics():
    # 10 draws x 2 chains cannot reach ESS 400, even after the retry (2x draws, target_accept 0.99)
    r = _run("fit", "--data", DATA, "--outcome", "sich", "--draws", "10", "--tune", "20", "--chains", "2", "--json")
    assert r.exit_code == 3, r.output
    assert "did not converge after 2 attempts" in r.stderr
    assert "diagnostics:" in r.stderr and "ess_bulk_min" in r.stderr
    assert r.stdout == ""  # no result is printed for a failed fit


@pytest.mark.parametrize("args, needle", [
    (["--tau-prior", "halfnormal(-1)"], "must be > 0"),
    (["--effect-prior", "cauchy(0, 1)"], "unknown family"),
    (["--draws", "3"], "--draws"),
    (["--model", "proportion", "--nuts"], None),  # --nuts is a no-op outside the normal model: not an error
])
def test_bad_fit_options(args, needle, tmp_path):
    r = _run("fit", "--data", DATA, "--outcome", "mortality", *args, "--json") \
        if "--draws" not in args else _run("fit", "--data", DATA, "--outcome", "mortality", *args, "--json")
    if needle is None:
        assert r.exit_code == 0, r.output
        return
    assert r.exit_code == 2
    assert needle in r.output


def test_unwritable_out_dir_is_input_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    r = _run("fit", "--data", DATA, "--outcome", "mortality", "--draws", "200", "--out", str(f / "sub"))
    assert r.exit_code == 2 and "not a directory" in r.output
    assert not list(tmp_path.glob("**/*.part"))


@pytest.mark.parametrize("model,measure,control_risk", [("normal", "OR", "median"), ("normal", "RR", "0.3"),
                                                        ("contrast", "OR", "median"), ("contrast", "RR", "0.2"),
                                                        ("proportion", "OR", "median")])
def test_interval_alone_is_the_summarys(model, measure, control_risk):
    """FitResult.interval(key) (what leave-one-out refits and grid rows read instead of the whole summary) gives the
    summary's q025, q50 and q975 for every pooled quantity, exact or sampled, and None where it has none."""
    table = load_studies(DATA)
    cfg = FitConfig(outcome="mortality", model=model, measure=measure, draws=200, tune=300, seed=2,
                    control_risk=control_risk)
    keys = ("mu", "tau", "or", "rr", "rd", "rate", "rate_mean")
    res = fit(table, cfg)
    alone = {k: copy.copy(res).interval(k) for k in keys}  # each on a copy without the summary
    assert "_summary" not in res.__dict__
    summ = res.summary()
    for k in keys:
        want = (None, None, None) if k not in summ else tuple(summ[k][q] for q in ("q025", "q50", "q975"))
        assert alone[k] == pytest.approx(want, rel=1e-12, abs=0) if want[0] is not None else alone[k] == want, k
