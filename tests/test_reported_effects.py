"""Reported (adjusted) estimates beside counts, bias models and the tipping point (issue 17).

References: metafor 3.8 rma(yi, sei = ...) on our rows mixing counts and reported ORs (pinned by
validation/reported_reference.R in tests/data/reported_reference.json, relative 1e-6); the exact normal-normal
posterior with and without the bias model against an independent brute-force 2-D grid over (mu, tau); the tipping
point against Brent's method on that grid.
"""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats
from typer.testing import CliRunner

from rescuemeta.bias import design_models, load_bias_priors, resolve_bias_prior, tipping_point
from rescuemeta.cli import app
from rescuemeta.data import load_studies, select
from rescuemeta.errors import InputError
from rescuemeta.fit import FitConfig, fit
from rescuemeta.queries import probability

from conftest import ROOT

DATA = ROOT / "data" / "studies.csv"
REF = json.loads((ROOT / "tests" / "data" / "reported_reference.json").read_text())
runner = CliRunner()


@pytest.mark.parametrize("case", REF["cases"], ids=lambda c: f"{c['outcome']}-{c['method']}-{'knha' if c['hksj'] else 'z'}")
def test_mixed_rows_match_metafor_rma_yi_sei(case):
    """freq --all-studies on our rows: counts by escalc, reported ORs as rma(yi, sei) rows, as metafor."""
    args = ["freq", "--data", str(DATA), "--outcome", case["outcome"], "--measure", "OR", "--method", case["method"],
            "--all-studies", "--json"] + (["--hksj"] if case["hksj"] else [])
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["inclusion"]["included"] == case["study_id"]
    assert d["inclusion"]["reported"] == case["reported"] and d["inclusion"]["k_reported"] == len(case["reported"])
    assert [s["yi"] for s in d["studies"]] == pytest.approx(case["yi"], rel=1e-10)
    for ours, theirs in (("estimate", "estimate"), ("se", "se"), ("ci_low", "ci_low"), ("ci_high", "ci_high"),
                         ("pval", "pval"), ("tau2", "tau2"), ("q", "q")):
        assert d[ours] == pytest.approx(case[theirs], rel=1e-6, abs=1e-10), ours
    assert d["k"] == case["k"]


def test_counts_only_restores_the_count_analysis(tmp_path):
    """--counts-only gives exactly the analysis of the file without its estimate columns; without it, the
    reported ORs replace the crude counts of their rows."""
    f = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    plain = tmp_path / "plain.csv"
    f.drop(columns=["measure", "estimate", "ci_low", "ci_high", "adjusted", "estimate_quote"]).to_csv(plain, index=False)
    for args in (["freq", "--outcome", "mortality", "--json"], ["fit", "--outcome", "mortality", "--model", "normal", "--json"]):
        a = json.loads(runner.invoke(app, args + ["--data", str(DATA), "--counts-only"]).stdout)
        b = json.loads(runner.invoke(app, args + ["--data", str(plain)]).stdout)
        c = json.loads(runner.invoke(app, args + ["--data", str(DATA)]).stdout)
        key = "estimate" if args[0] == "freq" else "or"
        pa_, pb, pc = (x[key] if key == "estimate" else x[key]["q50"] for x in (a, b, c))
        assert pa_ == pytest.approx(pb, rel=1e-12) and abs(pc - pb) > 1e-3
        assert a["inclusion"]["k_reported"] == 0 and c["inclusion"]["k_reported"] == 1


def test_binomial_models_use_counts_and_say_so(tmp_path):
    """The contrast model keeps the counts of rows that also report an estimate; a row with only an estimate is
    excluded from it with the reason, and enters the normal model. (Overlap groups off: a row without counts has
    no total, so the overlap rule prefers its partner with counts.)"""
    f = pd.read_csv(DATA, dtype=str, keep_default_na=False)
    row = f[(f.study_id == "Mohammaden2023") & (f.outcome == "mortality")].index[0]
    for c in ("events_treat", "total_treat", "events_control", "total_control"):
        f.loc[row, c] = ""
    p = tmp_path / "est_only.csv"
    f.to_csv(p, index=False)
    table = load_studies(p)
    sel = select(table, "mortality", effects="counts", all_studies=True)
    assert "Mohammaden2023" not in sel.study_ids
    assert ("Mohammaden2023", "reported estimate only (counts-only analysis)") in sel.excluded
    one = select(table, "mortality", arms="one", all_studies=True)
    assert ("Mohammaden2023", "reported estimate only (no treatment-arm counts)") in one.excluded
    n = fit(table, FitConfig("mortality", "normal", all_studies=True))
    assert "Mohammaden2023" in n.data.study_ids and n.summary()["inclusion"]["reported"] == ["Mohammaden2023", "PCSEARCH2024"]
    # RR analyses cannot use a reported OR: the row drops out with the reason, where it has no counts
    rr = select(table, "mortality", effects="reported", measure="RR", all_studies=True)
    assert ("Mohammaden2023", "reports an OR, not an RR") in rr.excluded


def _grid_posterior(y, s, tau_scale=0.5, mu_sd=4.0):
    """Brute force: the normal-normal posterior of (mu, tau), half-normal(tau_scale) and N(0, mu_sd^2) priors, on a
    2-D grid (1601 x 1601 over mu in [-5, 5], tau in [0, 4]); returns P(mu < 0) as a function."""
    mu = np.linspace(-5, 5, 1601)
    tau = np.linspace(0, 4, 1601)
    M, T = np.meshgrid(mu, tau, indexing="ij")
    v = s[None, None, :] ** 2 + T[..., None] ** 2
    ll = -0.5 * np.sum(np.log(v) + (y[None, None, :] - M[..., None]) ** 2 / v, axis=-1)
    lp = ll + stats.norm.logpdf(M, 0, mu_sd) + stats.halfnorm.logpdf(T, scale=tau_scale)
    w = np.exp(lp - lp.max())
    w[:, 0] *= 0.5
    w[:, -1] *= 0.5
    return float(w[mu < 0].sum() + 0.5 * w[mu == 0].sum()) / float(w.sum())


def _mixed_table(tmp_path):
    """Three non-randomised rows (two reported ORs) and one randomised count row."""
    p = tmp_path / "mixed.csv"
    p.write_text("study_id,outcome,events_treat,total_treat,events_control,total_control,design,measure,estimate,"
                 "ci_low,ci_high,adjusted\n"
                 "R1,death,10,100,16,100,rct,,,,,\n"
                 "O1,death,12,80,20,70,observational,,,,,\n"
                 "O2,death,,,,,observational,OR,0.45,0.22,0.92,true\n"
                 "O3,death,30,150,45,160,observational,OR,0.62,0.40,0.96,true\n")
    return load_studies(p)


def test_bias_adjusted_normal_model_matches_an_independent_grid(tmp_path):
    """P(OR < 1) of the exact normal model (quadrature over tau), with reported rows and with the bias prior
    N(m, s^2) on the non-randomised rows only, against the brute-force grid on hand-built (y, s): the randomised
    row unshifted, the others at y - m with variance + s^2. Grid error is below 2e-4; tolerance 1e-3."""
    table = _mixed_table(tmp_path)
    y = np.array([math.log(10 / 90 / (16 / 84)), math.log(12 / 68 / (20 / 50)), math.log(0.45), math.log(0.62)])
    s = np.array([math.sqrt(1 / 10 + 1 / 90 + 1 / 16 + 1 / 84), math.sqrt(1 / 12 + 1 / 68 + 1 / 20 + 1 / 50),
                  (math.log(0.92) - math.log(0.22)) / (2 * stats.norm.ppf(0.975)),
                  (math.log(0.96) - math.log(0.40)) / (2 * stats.norm.ppf(0.975))])
    cfg = FitConfig("death", "normal")
    res = fit(table, cfg)
    assert res.data.model_data.arrays["y"] == pytest.approx(y, rel=1e-12)
    assert probability(res, "OR < 1")["probability"] == pytest.approx(_grid_posterior(y, s), abs=1e-3)
    biased = np.array([False, True, True, True])
    for m, sd in ((-0.3, 0.1), (0.2, 0.4), (-0.8, 0.0001)):
        r = fit(table, FitConfig("death", "normal", bias_prior=f"normal({m}, {sd})"))
        yb, sb = np.where(biased, y - m, y), np.where(biased, np.sqrt(s**2 + sd**2), s)
        assert probability(r, "OR < 1")["probability"] == pytest.approx(_grid_posterior(yb, sb), abs=1e-3), (m, sd)
        assert r.summary()["inclusion"]["bias_adjusted"] == ["O1", "O2", "O3"]


def test_tipping_point_matches_root_finding_on_the_grid(tmp_path):
    table = _mixed_table(tmp_path)
    cfg = FitConfig("death", "normal")
    tp = tipping_point(table, cfg, "OR < 1", threshold=0.9, bias_sd=0.1)
    r = fit(table, cfg)
    y, s = r.data.model_data.arrays["y"], r.data.model_data.arrays["s"]
    biased = np.array([False, True, True, True])

    def g(m):
        return _grid_posterior(np.where(biased, y - m, y), np.where(biased, np.sqrt(s**2 + 0.01), s)) - 0.9
    ref = optimize.brentq(g, -3, 0, xtol=1e-8)
    assert tp["bias_mean"] == pytest.approx(ref, abs=5e-3)
    assert tp["bias_mean"] < 0 and tp["ratio_of_ratios"] == pytest.approx(math.exp(-tp["bias_mean"]))
    assert tp["probability_without_bias"] > 0.9
    # at the tipping point the probability is the threshold
    from rescuemeta.bias import bias_probability

    assert bias_probability(table, cfg, "OR < 1", tp["bias_mean"], 0.1) == pytest.approx(0.9, abs=1e-6)


def test_stratified_design_model_and_refusals(tmp_path):
    table = _mixed_table(tmp_path)
    dm = design_models(table, FitConfig("death", "normal"), "normal(-0.2, 0.2)")
    assert dm["stratified"]["randomised"]["k"] == 1 and dm["stratified"]["non_randomised"]["k"] == 3
    d = dm["stratified"]["difference"]
    assert d["q025"] < d["q50"] < d["q975"]
    assert dm["bias"]["priors"]["bias"] == "normal(-0.2, 0.2)" and dm["pooled"]["k"] == 4
    # a bias prior where every row is randomised, and on a binomial model
    p = tmp_path / "rct.csv"
    p.write_text("study_id,outcome,events_treat,total_treat,events_control,total_control,design\n"
                 "R1,death,10,100,16,100,rct\nR2,death,8,90,15,95,rct\n")
    with pytest.raises(InputError, match="every included row is randomised"):
        fit(load_studies(p), FitConfig("death", "normal", bias_prior="normal(0, 0.2)"))
    with pytest.raises(InputError, match="no comparison to bias"):
        FitConfig("death", "proportion", bias_prior="normal(0, 0.2)").validate()


def test_named_bias_priors_are_signed_by_the_direction_of_benefit():
    named = load_bias_priors(ROOT / "models" / "bias_priors.toml")
    h = named["hemkens2016"]
    assert h.ror == 1.31 and h.quote and h.url.startswith("https://")
    assert resolve_bias_prior("hemkens2016", "lower", ROOT / "models" / "bias_priors.toml") == \
        f"normal({-math.log(1.31):.6g}, 0.12)"
    assert resolve_bias_prior("hemkens2016", "higher", ROOT / "models" / "bias_priors.toml") == \
        f"normal({math.log(1.31):.6g}, 0.12)"
    assert resolve_bias_prior("normal(0.1, 0.2)", "lower") == "normal(0.1, 0.2)"
    with pytest.raises(InputError, match="not normal"):
        resolve_bias_prior("hemkens", "lower", ROOT / "models" / "bias_priors.toml")
    with pytest.raises(InputError, match="must be normal"):
        resolve_bias_prior("student_t(3, 0, 1)", "lower")


def test_cli_tipping_and_design_model():
    r = runner.invoke(app, ["tipping", "--data", str(DATA), "--outcome", "mortality", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["query"] == "OR < 1" and d["bias_mean"] < 0 and d["threshold"] == 0.95
    r = runner.invoke(app, ["tipping", "--data", str(DATA), "--outcome", "functional_independence", "--json"])
    d = json.loads(r.stdout)
    assert d["query"] == "OR > 1" and d["bias_mean"] > 0  # more events are better: benefit-exaggerating bias is upward
    r = runner.invoke(app, ["fit", "--data", str(DATA), "--outcome", "mortality", "--model", "normal",
                            "--design-model", "stratified", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["stratified"]["randomised"] is None and "only non-randomised" in d["stratified"]["note"]
    r = runner.invoke(app, ["fit", "--data", str(DATA), "--outcome", "mortality", "--model", "proportion",
                            "--bias-prior", "normal(0, 0.2)"])
    assert r.exit_code == 2 and "no comparison to bias" in r.stderr


def _reported_table(tmp_path):
    """Five rows that report only an OR (one randomised): the contrast model's binomial terms vanish and it is the
    normal-normal model on these log ORs, which has an exact posterior."""
    p = tmp_path / "reported.csv"
    p.write_text("study_id,outcome,events_treat,total_treat,events_control,total_control,design,measure,estimate,"
                 "ci_low,ci_high\n"
                 "R1,death,,,,,rct,OR,0.80,0.55,1.16\n"
                 "O1,death,,,,,observational,OR,0.45,0.22,0.92\n"
                 "O2,death,,,,,observational,OR,0.62,0.40,0.96\n"
                 "O3,death,,,,,observational,OR,0.95,0.60,1.50\n"
                 "O4,death,,,,,observational,OR,0.50,0.30,0.83\n")
    return load_studies(p)


# the bias model has a compiled graph of its own (about a minute cold): its checks run in the slow suite
@pytest.mark.parametrize("bias", ["", pytest.param("normal(-0.3, 0.2)", marks=pytest.mark.slow)])
def test_contrast_model_on_reported_rows_matches_the_exact_normal_model(tmp_path, bias):
    """With only reported rows, the contrast model (NUTS; normal likelihood on each theta_i, bias in the graph) is
    the normal-normal model: its posterior of mu and P(OR < 1) agree with the exact quadrature within Monte Carlo
    error (4 x 1000 draws: the MCSE of a quantile of mu is about 0.01; tolerance 0.04, and 0.02 for P)."""
    import os

    table = _reported_table(tmp_path)
    draws = 1000 if os.environ.get("CI") else 2000
    c = fit(table, FitConfig("death", "contrast", bias_prior=bias, draws=draws, seed=11))
    n = fit(table, FitConfig("death", "normal", bias_prior=bias))
    assert c.summary()["inclusion"]["k_reported"] == 5 and c.diagnostics.ok
    cm, nm = c.summary()["mu"], n.summary()["mu"]
    for key in ("q025", "q50", "q975"):
        assert cm[key] == pytest.approx(nm[key], abs=0.04), key
    assert probability(c, "OR < 1")["probability"] == pytest.approx(probability(n, "OR < 1")["probability"], abs=0.02)
    assert c.summary()["tau"]["q50"] == pytest.approx(n.summary()["tau"]["q50"], abs=0.04)


@pytest.mark.slow
def test_contrast_tipping_point_refits_at_the_threshold(tmp_path):
    """Contrast model: the reweighted-then-refitted tipping point; on reported rows it agrees with the exact
    normal model's (Brent's method) within 0.05 on the log scale, and its final refit is at the threshold within
    the stated Monte Carlo tolerance."""
    table = _reported_table(tmp_path)
    tc = tipping_point(table, FitConfig("death", "contrast", draws=1000, seed=5), "OR < 1", threshold=0.9)
    tn = tipping_point(table, FitConfig("death", "normal"), "OR < 1", threshold=0.9)
    assert tc["bias_mean"] == pytest.approx(tn["bias_mean"], abs=0.05)
    last = tc["refits"][-1]
    assert abs(last["probability"] - 0.9) <= max(0.005, 3 * last["mcse"])


def test_contrast_with_reported_rows_on_our_data(tmp_path):
    """Our mortality rows in the contrast model: Mohammaden2023 enters by its adjusted OR (its counts are not used
    for it), the rest by counts; the reported row's predictive check and LOO use its estimate."""
    from rescuemeta.criticism import predictive_checks, psis_loo

    table = load_studies(DATA)
    res = fit(table, FitConfig("mortality", "contrast", draws=500, seed=2))
    a = res.data.model_data.arrays
    i = res.data.study_ids.index("Mohammaden2023")
    assert a["est_mask"][i] == 1 and a["n1i"][i] == 0 and a["est_y"][i] == pytest.approx(math.log(0.40))
    pc = predictive_checks(res)
    row = pc["studies"][i]
    assert "ppp" in row and "ppp_treat" not in row
    lo = psis_loo(table, res, reloo=False)
    assert "reported log OR" in lo["estimand"] and np.isfinite(lo["studies"][i]["elpd"])
    crude = fit(table, FitConfig("mortality", "contrast", effects="counts", draws=500, seed=2))
    assert "est_mask" not in crude.data.model_data.arrays
