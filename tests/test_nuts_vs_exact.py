"""NUTS (nutpie) on the normal-normal model against the exact quadrature posterior, on Crins et al. 2014
(Roever 2020, J Stat Softw 93(6)); the compile-once prior swap; the convergence guard.

Tolerance: each posterior quantile within 4 Monte Carlo standard errors (ArviZ ``mcse`` for quantiles),
so the check fails for a real discrepancy but not by chance (about 1 in 15,000 per quantity).
"""

import arviz as az
import numpy as np
import pytest

from rescuemeta.effects import escalc
from rescuemeta.exact import NormalNormalPosterior
from rescuemeta.models import ModelData
from rescuemeta.priors import parse
from rescuemeta.sampling import ConvergenceError, Sampler

from conftest import CI, load_dataset

DRAWS = 1000 if CI else 2500


@pytest.fixture(scope="module")
def crins_data():
    d = load_dataset("crins2014")
    es = escalc("OR", d["events_treat"], d["total_treat"], d["events_control"], d["total_control"])
    return es.yi, np.sqrt(es.vi)


@pytest.fixture(scope="module")
def sampler():
    return Sampler()


def _check_against_exact(idata, exact, var, qs):
    for q in qs:
        draws = idata.posterior[var]
        est = float(np.quantile(draws.values, q))
        mcse = float(az.mcse(idata, var_names=[var], method="quantile", prob=q)[var])
        truth = exact.mu_quantile(q) if var == "mu" else exact.tau_quantile(q)
        assert abs(est - truth) <= 4 * mcse + 1e-3, f"{var} q{q}: NUTS {est:.4f} vs exact {truth:.4f} (mcse {mcse:.4f})"


@pytest.mark.parametrize("tau_spec", ["halfnormal(0.5)", "turner(general)"])
def test_nuts_normal_model_matches_quadrature(sampler, crins_data, tau_spec):
    y, s = crins_data
    tau_prior = parse(tau_spec)
    idata, diag = sampler.sample(ModelData("normal", {"y": y, "s": s}), tau_prior, parse("normal(0, 4)", "effect"),
                                 draws=DRAWS, chains=4, seed=11)
    assert diag.ok
    exact = NormalNormalPosterior(y, s, tau_prior, 0.0, 4.0)
    _check_against_exact(idata, exact, "mu", [0.025, 0.5, 0.975])
    _check_against_exact(idata, exact, "tau", [0.25, 0.5, 0.75])


def test_changing_prior_values_does_not_recompile(crins_data):
    y, s = crins_data
    sm = Sampler()
    md = ModelData("normal", {"y": y, "s": s})
    eff = parse("normal(0, 4)", "effect")
    medians = []
    for spec in ("halfnormal(0.25)", "halfnormal(1.0)"):
        idata, _ = sm.sample(md, parse(spec), eff, draws=DRAWS, seed=5)
        medians.append(float(np.median(idata.posterior["tau"].values)))
        exact = NormalNormalPosterior(y, s, parse(spec), 0.0, 4.0)
        _check_against_exact(idata, exact, "tau", [0.5])
    assert sm.compiles == 1
    assert medians[1] > medians[0]  # the new prior value really reached the compiled model


def test_convergence_guard_reports_failure(crins_data):
    y, s = crins_data
    with pytest.raises(ConvergenceError) as e:
        # 5 draws per chain cannot reach the ESS threshold
        Sampler().sample(ModelData("normal", {"y": y, "s": s}), parse("halfcauchy(1)"),
                         parse("normal(0, 4)", "effect"), draws=5, tune=50, chains=2, seed=1)
    assert e.value.exit_code == 3
    assert e.value.diagnostics["attempts"] == 2
    assert "did not converge" in str(e.value)


def test_every_tau_family_but_uniform_shares_one_compiled_graph(crins_data):
    """Issue 19: the tau-prior families of models.SHARED_TAU_FAMILIES are one compiled graph (tau = exp(tau_log__),
    the family a one-hot pm.Data, its normalised density a potential): a grid over seven families compiles once,
    uniform(a, b) once more (its own graph), and every family's NUTS posterior of tau and mu matches the exact
    quadrature under that family (within 4 MCSEs): the selected density really is the family's."""
    from rescuemeta.models import SHARED_TAU_FAMILIES

    y, s = crins_data
    sm = Sampler()
    md = ModelData("normal", {"y": y, "s": s})
    eff = parse("normal(0, 4)", "effect")
    specs = ["halfnormal(0.3)", "halfcauchy(0.5)", "halft(3, 0.5)", "exponential(2)", "lognormal(-1.2, 0.8)",
             "invgamma(1, 0.1)", "turner(general)"]
    assert sorted({parse(x).family for x in specs}) == sorted(SHARED_TAU_FAMILIES)
    for spec in specs:
        idata, diag = sm.sample(md, parse(spec), eff, draws=DRAWS, seed=7)
        assert diag.ok, spec
        exact = NormalNormalPosterior(y, s, parse(spec), 0.0, 4.0)
        _check_against_exact(idata, exact, "tau", [0.25, 0.5, 0.75])
        _check_against_exact(idata, exact, "mu", [0.5])
    assert sm.compiles == 1
    sm.sample(md, parse("uniform(0, 2)"), eff, draws=DRAWS, seed=7)
    assert sm.compiles == 2
