"""The exact Bayesian meta-regression (normal model, as bayesmeta's ``bmr``; issue 15): conditional on tau the
coefficients are Gaussian and the posterior is a 1-D quadrature over tau. Checked (1) against a brute-force
3-D grid over (tau, beta_0, beta_1) computed here from the unnormalised joint density alone, on dat.bcg's log RR
with absolute latitude (Colditz et al. 1994; metafor's ``rma`` example) and with a two-level allocation factor;
(2) against metafor's weighted least squares at a fixed tau (a tau prior concentrated on metafor's REML tau and
vague coefficient priors reproduce its estimates and z standard errors); (3) without moderators it is the
normal-normal posterior exactly."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from rescuemeta.data import load_studies
from rescuemeta.effects import escalc
from rescuemeta.exact import NormalNormalPosterior, NormalRegressionPosterior
from rescuemeta.fit import FitConfig, fit
from rescuemeta.priors import parse

from conftest import ROOT

BCG = ROOT / "tests" / "data" / "datasets" / "bcg_mods.csv"
REF = json.loads((ROOT / "tests" / "data" / "metareg_reference.json").read_text())


def _bcg():
    d = pd.read_csv(BCG)
    es = escalc("RR", d["events_treat"].to_numpy(), d["total_treat"].to_numpy(), d["events_control"].to_numpy(),
                d["total_control"].to_numpy())
    return d, es.yi, np.sqrt(es.vi)


def _brute_force(y, s, X, tau_prior, b_mean, b_sd, n_tau=200, n_b=121):
    """Midpoint-rule grid posterior over (tau, b0, b1), from the unnormalised joint density alone. Returns the
    marginal CDFs of b0, b1 and tau evaluated at cell boundaries (where the midpoint rule is exact to O(h^2))."""
    top = min(3.0, float(tau_prior.upper(0.99999)))
    h = top / n_tau
    tau = (np.arange(n_tau) + 0.5) * h
    w = 1 / (s**2 + 0.3**2)
    V = np.linalg.inv(X.T @ (w[:, None] * X))
    m = V @ X.T @ (w * y)
    sd = np.sqrt(np.diag(V)) * 2.5
    grids = [np.linspace(m[j] - 9 * sd[j], m[j] + 9 * sd[j], n_b) for j in (0, 1)]
    B0, B1 = np.meshgrid(*grids, indexing="ij")
    lin = B0[..., None] * X[:, 0] + B1[..., None] * X[:, 1]  # (n_b, n_b, k)
    prior_b = stats.norm.logpdf(B0, b_mean[0], b_sd[0]) + stats.norm.logpdf(B1, b_mean[1], b_sd[1])
    logp = np.empty((n_tau, n_b, n_b))
    for i, t in enumerate(tau):
        logp[i] = (stats.norm.logpdf(y, lin, np.sqrt(s**2 + t**2)).sum(axis=-1) + prior_b
                   + float(tau_prior.logpdf(np.array([t]))[0]))
    p = np.exp(logp - logp.max())
    p /= p.sum()
    marg = [p.sum(axis=(0, 2)), p.sum(axis=(0, 1))]

    def coef_cdf_at(j, x):
        """(boundary nearest x, grid CDF there)."""
        g = grids[j]
        edges = 0.5 * (g[1:] + g[:-1])
        e = int(np.argmin(np.abs(edges - x)))
        return float(edges[e]), float(marg[j][: e + 1].sum())

    def tau_cdf_at(x):
        e = int(round(x / h))
        return e * h, float(p[:e].sum())

    return coef_cdf_at, tau_cdf_at


@pytest.mark.parametrize("moderator", ["ablat", "alloc_random"])
def test_against_brute_force_3d_grid(moderator):
    d, y, s = _bcg()
    x = d["ablat"].to_numpy(float) if moderator == "ablat" else (d["alloc"] == "random").to_numpy(float)
    x = x - x.mean() if moderator == "ablat" else x
    X = np.column_stack([np.ones(len(y)), x])
    tp = parse("halfnormal(0.5)")
    b_mean, b_sd = np.array([0.0, 0.0]), np.array([2.0, 1.0])
    ex = NormalRegressionPosterior(y, s, tp, X=X, b_mean=b_mean, b_sd=b_sd)
    coef_cdf_at, tau_cdf_at = _brute_force(y, s, X, tp, b_mean, b_sd)
    for j in (0, 1):
        for q in (0.05, 0.5, 0.95):
            x, grid_cdf = coef_cdf_at(j, ex.quantile(("coef", j), q))
            assert grid_cdf == pytest.approx(ex.cdf(("coef", j), x), abs=3e-3), (j, q)  # grid error <= 9.4e-4
    for t in (0.1, 0.25, 0.5):
        x, grid_cdf = tau_cdf_at(t)
        assert grid_cdf == pytest.approx(ex.tau_cdf(x), abs=1e-3), t  # grid error <= 1e-4


def test_intercept_only_is_the_normal_normal_posterior():
    _, y, s = _bcg()
    tp = parse("halfcauchy(0.5)")
    a = NormalNormalPosterior(y, s, tp, 0.2, 3.0)
    b = NormalRegressionPosterior(y, s, tp, 0.2, 3.0, X=np.ones((len(y), 1)), b_mean=np.array([0.2]),
                                  b_sd=np.array([3.0]))
    for q in (0.025, 0.5, 0.975):
        assert b.quantile("mu", q) == pytest.approx(a.quantile("mu", q), rel=1e-10, abs=1e-12)
        assert b.quantile("theta_new", q) == pytest.approx(a.quantile("theta_new", q), rel=1e-10, abs=1e-12)
        assert b.tau_quantile(q) == pytest.approx(a.tau_quantile(q), rel=1e-10)
    for i in range(len(y)):
        assert b.quantile(i, 0.3) == pytest.approx(a.quantile(i, 0.3), rel=1e-9, abs=1e-12)


def test_fixed_tau_reproduces_metafor_weighted_least_squares():
    """With tau held at metafor's REML estimate (a uniform prior 1e-7 wide) and vague coefficient priors (SD 1e4),
    the posterior mean and SD of each coefficient are metafor's estimate and z standard error (dat.bcg, log RR on
    ablat + year, REML)."""
    case = next(c for c in REF["cases"] if c["dataset"] == "bcg_mods" and c["measure"] == "RR"
                and c["method"] == "REML" and not c["hksj"] and c["mods"] == ["ablat", "year"])["values"]
    t = float(np.sqrt(case["tau2"]))
    table = load_studies(BCG)
    res = fit(table, FitConfig("bcg_mods", "normal", measure="RR", mods=("ablat", "year"),
                               tau_prior=f"uniform({t}, {t + 1e-7})", effect_prior="normal(0, 10000)",
                               coef_prior="normal(0, 10000)"))
    s = res.summary()
    for name, ref in case["coefficients"].items():
        assert s["coefficients"][name]["mean"] == pytest.approx(ref["estimate"], rel=1e-5, abs=1e-7), name
        assert s["coefficients"][name]["sd"] == pytest.approx(ref["se"], rel=1e-5), name
    assert s["moderators"]["centred"] == pytest.approx({"ablat": float(pd.read_csv(BCG)["ablat"].mean()),
                                                        "year": float(pd.read_csv(BCG)["year"].mean())})


def test_subgroup_fit_levels_and_differences():
    table = load_studies(ROOT / "data" / "studies.csv")
    res = fit(table, FitConfig("mortality", "normal", subgroup="circulation", all_studies=True))
    s = res.summary()
    levels = s["moderators"]["levels"]["circulation"]
    assert list(s["subgroups"]) == levels and sum(v["k"] for v in s["subgroups"].values()) == s["k"]
    ex = res.exact
    # a level's effect is intercept + its dummy; the reference level's is the intercept (no numeric moderators)
    c = res.level_vector(levels[1])
    assert s["subgroups"][levels[1]]["q50"] == pytest.approx(ex.quantile(("lin", c), 0.5), rel=1e-12)
    assert s["subgroups"][levels[0]]["q50"] == pytest.approx(s["coefficients"]["intrcpt"]["q50"], rel=1e-12)
    diff = res.level_vector(levels[1]) - res.level_vector(levels[0])
    np.testing.assert_array_equal(diff, res.coefficient_vector(f"circulation[{levels[1]}]"))
    assert s["subgroups"][levels[0]]["natural"]["q50"] == pytest.approx(np.exp(s["subgroups"][levels[0]]["q50"]))


def test_queries_on_coefficients_and_differences():
    from rescuemeta.errors import InputError
    from rescuemeta.queries import parse_query, probability

    q = parse_query("coef[circulation[posterior]] <= -0.1")
    assert (q.scale, q.op, q.value, q.args) == ("COEF", "<=", -0.1, ("circulation[posterior]",))
    q = parse_query(" diff( posterior , anterior ) > 0")
    assert (q.scale, q.args) == ("DIFF", ("posterior", "anterior"))
    table = load_studies(ROOT / "data" / "studies.csv")
    res = fit(table, FitConfig("mortality", "normal", subgroup="circulation", all_studies=True))
    c = res.level_vector("posterior") - res.level_vector("anterior")
    p = probability(res, "diff(posterior, anterior) < 0")
    assert p["probability"] == pytest.approx(res.exact.cdf(("lin", c), 0.0), abs=1e-15) and p["method"] == "exact"
    # P(diff > 0) + P(diff < 0) = 1, and a coefficient is the difference from the reference level
    assert probability(res, "diff(posterior, anterior) > 0")["probability"] == pytest.approx(1 - p["probability"])
    assert probability(res, "coef[circulation[posterior]] < 0")["probability"] == pytest.approx(p["probability"])
    # the exact probability against the fit's independent exact draws (4000): within 4 binomial SEs
    draws = res.linear_draws(c)
    se = np.sqrt(p["probability"] * (1 - p["probability"]) / draws.size)
    assert float((draws < 0).mean()) == pytest.approx(p["probability"], abs=4 * se)
    for bad, needle in (("diff(posterior, lateral) < 0", "no level 'lateral'"),
                        ("coef[year] > 0", "no coefficient 'year'")):
        with pytest.raises(InputError, match=needle):
            probability(res, bad)
    plain = fit(table, FitConfig("mortality", "normal"))
    with pytest.raises(InputError, match="meta-regression"):
        probability(plain, "coef[x] > 0")


def test_cli_fit_with_moderators():
    from typer.testing import CliRunner

    from rescuemeta.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["fit", "--data", str(BCG), "--model", "normal", "--measure", "RR", "--mods", "ablat,alloc",
                            "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert list(s["coefficients"]) == ["intrcpt", "ablat", "alloc[random]", "alloc[systematic]"]
    assert s["moderators"]["mods"] == ["ablat", "alloc"] and s["moderators"]["coef_prior"] == "normal(0, 10)"
    assert s["coefficients"]["ablat"]["q975"] < 0  # the latitude gradient of BCG efficacy (Colditz et al. 1994)
    r = runner.invoke(app, ["fit", "--data", str(BCG), "--model", "normal", "--mods", "ablat", "--subgroup", "alloc"])
    assert r.exit_code == 2 and "give --mods or --subgroup" in r.stderr
    r = runner.invoke(app, ["fit", "--data", str(BCG), "--model", "normal", "--mods", "latitude"])
    assert r.exit_code == 2 and "'latitude' is not a column" in r.stderr
    r = runner.invoke(app, ["fit", "--data", str(BCG), "--model", "normal", "--mods", "ablat",
                            "--coef-prior", "student_t(3, 0, 1)"])
    assert r.exit_code == 2 and "normal coefficient prior" in r.stderr
    r = runner.invoke(app, ["prob", "diff(random, alternate) > 0", "--data", str(BCG), "--model", "normal",
                            "--measure", "RR", "--subgroup", "alloc", "--json"])
    assert r.exit_code == 0, r.output
    assert 0 < json.loads(r.stdout)[0]["probability"] < 1


def test_simulation_based_calibration_with_one_moderator():
    """SBC (Talts et al. 2018) for the exact meta-regression: 400 data sets drawn from the prior predictive (tau ~
    half-normal(0.5), intercept ~ N(0, 1), slope ~ N(0, 0.5^2), 8 studies with fixed moderator values and standard
    errors); the exact posterior CDF at the true slope, tau and intercept must be uniform: chi-square over 10 bins
    p > 0.001, and the 90% central intervals cover 0.9 +- 0.045 (3 binomial SEs; with this seed the slope's is
    0.87, six intervals from the bound). The data sets are deterministic (fixed seed, exact posterior)."""
    rng = np.random.default_rng(20261126)
    tp = parse("halfnormal(0.5)")
    k = 8
    x = rng.normal(size=k)
    X = np.column_stack([np.ones(k), x - x.mean()])
    s = rng.uniform(0.15, 0.6, k)
    b_mean, b_sd = np.array([0.0, 0.0]), np.array([1.0, 0.5])
    pit = {"slope": [], "intercept": [], "tau": []}
    for _ in range(400):
        tau = float(tp.sample(rng, 1)[0])
        beta = rng.normal(b_mean, b_sd)
        y = rng.normal(X @ beta, np.sqrt(s**2 + tau**2))
        ex = NormalRegressionPosterior(y, s, tp, X=X, b_mean=b_mean, b_sd=b_sd)
        pit["slope"].append(ex.cdf(("coef", 1), beta[1]))
        pit["intercept"].append(ex.cdf(("coef", 0), beta[0]))
        pit["tau"].append(ex.tau_cdf(tau))
    for name, u in pit.items():
        u = np.asarray(u)
        counts, _ = np.histogram(u, bins=np.linspace(0, 1, 11))
        assert stats.chisquare(counts).pvalue > 1e-3, (name, counts)
        cover = float(np.mean((u > 0.05) & (u < 0.95)))
        assert abs(cover - 0.9) < 0.045, (name, cover)


def test_uncentred_intercept_beyond_floating_point_is_inf_without_a_warning():
    """metafor's intercept is the effect at year 0: on the rescue data's mortality its log OR reaches ~1e3, whose exp
    is reported as inf, quietly (it printed an overflow RuntimeWarning in every analysis); the slope is finite."""
    import warnings

    table = load_studies(ROOT / "data" / "studies.csv")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        s = fit(table, FitConfig("mortality", "normal", mods=("year",))).summary()
    assert s["coefficients"]["intrcpt"]["natural"]["q975"] == float("inf")
    assert all(np.isfinite(v) for v in s["coefficients"]["year"]["natural"].values())
