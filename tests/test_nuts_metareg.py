"""Meta-regression with NUTS (issue 15): moderators enter the study effect, theta_i ~ N(mu + x_i' beta, tau^2),
in every model kind. The normal model sampled with NUTS must reproduce its exact (quadrature) posterior within
Monte Carlo error; the binomial contrast model fits subgroups of the rescue data and answers difference queries
from its draws."""

import os

import arviz as az
import numpy as np
import pytest

from rescuemeta.data import load_studies
from rescuemeta.fit import FitConfig, fit
from rescuemeta.queries import probability

from conftest import ROOT

BCG = ROOT / "tests" / "data" / "datasets" / "bcg_mods.csv"
DRAWS = 500 if os.environ.get("CI") else 1000


@pytest.mark.slow  # its own compiled structure (normal model, 4 coefficients): ~30 s cold
def test_nuts_meta_regression_matches_the_exact_posterior():
    """dat.bcg, log RR on ablat + alloc (4 coefficients): for each coefficient and tau, the NUTS draws put
    probability 1/2 below the exact median and 0.1 / 0.9 below the exact 10% / 90% quantiles, within 4.5 Monte
    Carlo standard errors (ArviZ's MCSE of the indicator, which accounts for autocorrelation)."""
    table = load_studies(BCG)
    cfg = dict(outcome="bcg_mods", model="normal", measure="RR", mods=("ablat", "alloc"))
    ex = fit(table, FitConfig(**cfg))
    nu = fit(table, FitConfig(**cfg, method="nuts", draws=DRAWS, seed=4))
    assert nu.diagnostics.ok and nu.idata.posterior["beta"].sizes["coef"] == 4  # padded coefficients dropped
    names = ex.data.design.names
    for q in (0.1, 0.5, 0.9):
        for name in names:
            c = ex.coefficient_vector(name)
            cut = ex.exact.quantile(("lin", c), q)
            ind = (nu.linear_draws(c) < cut).astype(float)
            mcse = float(np.asarray(az.mcse(ind, method="mean")).ravel()[0])
            assert abs(ind.mean() - q) < 4.5 * mcse + 1e-3, (name, q, ind.mean(), mcse)
        cut = ex.exact.tau_quantile(q)
        ind = (nu.draws("tau") < cut).astype(float)
        assert abs(ind.mean() - q) < 4.5 * float(np.asarray(az.mcse(ind, method="mean")).ravel()[0]) + 1e-3
    assert {"slopes"} <= set(nu.idata.log_prior.data_vars)


def test_contrast_subgroups_on_the_rescue_data():
    """Mortality by circulation with the exact binomial likelihood: converges, reports each level's OR with its
    number of studies, and P(posterior circulation has a lower OR than anterior) from the draws with an MCSE."""
    table = load_studies(ROOT / "data" / "studies.csv")
    res = fit(table, FitConfig("mortality", "contrast", subgroup="circulation", all_studies=True, effects="counts",
                               draws=DRAWS, seed=3))
    s = res.summary()
    assert s["diagnostics"]["ok"] and s["diagnostics"]["divergences"] == 0
    assert set(s["subgroups"]) == set(s["moderators"]["levels"]["circulation"])
    assert sum(v["k"] for v in s["subgroups"].values()) == s["k"]
    p = probability(res, "diff(posterior, anterior) < 0")
    assert p["method"] == "nuts" and 0 < p["probability"] < 1 and 0 < p["mcse"] < 0.05
    c = res.level_vector("posterior") - res.level_vector("anterior")
    assert p["probability"] == pytest.approx(float((res.linear_draws(c) < 0).mean()), abs=1e-15)
    # the reference level's effect is the intercept; each level's natural scale is its OR
    lv0 = s["moderators"]["levels"]["circulation"][0]
    assert s["subgroups"][lv0]["q50"] == pytest.approx(s["coefficients"]["intrcpt"]["q50"], rel=1e-12)
    assert s["subgroups"][lv0]["natural"]["q50"] == pytest.approx(np.exp(s["subgroups"][lv0]["q50"]), rel=1e-12)


BRMS = ROOT / "tests" / "data" / "brms_metareg_reference.json"


@pytest.mark.parametrize("case", ["bcg_mods_ablat", "mortality_circulation"])
def test_contrast_meta_regression_matches_brms(case):
    """The binomial contrast model with moderators against brms/Stan with identical priors (alpha_i ~ N(0, 10^2),
    mu ~ N(0, 4^2), slopes ~ N(0, 10^2), tau ~ half-N(0, 0.5^2); validation/brms_metareg_reference.R, 4 x 5000
    draws): every posterior mean within 4 combined Monte Carlo standard errors, every posterior SD within 10%
    (dat.bcg log OR on centred latitude; our mortality rows by circulation)."""
    import json

    ref = json.loads(BRMS.read_text())["cases"][case]
    assert ref["divergences"] <= 0.001 * ref["draws"]  # Stan at adapt_delta 0.99: 1 of 20,000 for dat.bcg
    if case == "bcg_mods_ablat":
        res = fit(load_studies(BCG), FitConfig("bcg_mods", "contrast", mods=("ablat",), draws=DRAWS, seed=8))
    else:
        res = fit(load_studies(ROOT / "data" / "studies.csv"),  # the brms reference pools the rows' counts
                  FitConfig("mortality", "contrast", subgroup="circulation", all_studies=True, effects="counts",
                            draws=2 * DRAWS, seed=8))
    assert res.diagnostics.ok
    for name, r in ref["values"].items():
        d = (res.draws(name) if name in ("mu", "tau") else res.linear_draws(res.coefficient_vector(name)))
        mcse = float(np.asarray(az.mcse(d, method="mean")).ravel()[0])
        assert abs(d.mean() - r["mean"]) < 4 * np.hypot(mcse, r["mcse_mean"]), (name, d.mean(), r["mean"], mcse)
        assert d.std() == pytest.approx(r["sd"], rel=0.1), (name, d.std(), r["sd"])
