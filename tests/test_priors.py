"""Prior specs: parsing, the tau versus tau^2 scale, and Turner et al. (2015, Stat Med 34:984-998,
Table IV) values."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from rescuemeta.errors import InputError
from rescuemeta.priors import TURNER_COMPARISONS, TURNER_OUTCOMES, parse, turner_parameters

TAU_SPECS = ["halfnormal(0.5)", "halfcauchy(0.5)", "halft(3, 0.5)", "exponential(2)", "uniform(0, 5)",
             "lognormal(-1, 0.8)", "invgamma(1, 0.1)", "turner(all_cause_mortality, nonpharma_vs_placebo)",
             "turner(general)"]


@pytest.mark.parametrize("spec", TAU_SPECS)
def test_tau_density_integrates_to_one_on_tau(spec):
    p = parse(spec)
    dens = lambda t: float(np.exp(p.logpdf(np.array([t]))[0]))
    if p.family == "uniform":
        total = integrate.quad(dens, *p.params)[0]
    else:
        total = sum(integrate.quad(dens, a, b, limit=500)[0]
                    for a, b in [(0, 0.01), (0.01, 0.1), (0.1, 1), (1, 10), (10, np.inf)])
    assert total == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("spec", TAU_SPECS)
def test_sampler_and_quantiles_agree(spec):
    p = parse(spec)
    draws = p.sample(np.random.default_rng(1), 200_000)
    for q in (0.25, 0.5, 0.75):
        assert np.quantile(draws, q) == pytest.approx(float(p.ppf(q)), rel=0.02)


def test_turner_prior_is_on_tau_squared():
    # turner(all_cause_mortality, pharma_vs_placebo): log(tau^2) ~ N(-3.95, 1.34^2)
    p = parse("turner(all_cause_mortality, pharma_vs_placebo)")
    assert p.scale == "tau2" and p.params == (-3.95, 1.34)
    # median of tau is sqrt(exp(-3.95)), not exp(-3.95)
    assert float(p.ppf(0.5)) == pytest.approx(math.sqrt(math.exp(-3.95)), rel=1e-12)
    # density of tau = density of tau^2 at tau^2 times 2 tau
    t = 0.3
    dens_tau2 = stats.lognorm.pdf(t**2, s=1.34, scale=math.exp(-3.95))
    assert float(np.exp(p.logpdf(np.array([t]))[0])) == pytest.approx(dens_tau2 * 2 * t, rel=1e-12)


def test_invgamma_is_on_tau_squared():
    p = parse("invgamma(0.001, 0.001)")
    assert p.scale == "tau2"
    t = 0.5
    assert float(np.exp(p.logpdf(np.array([t]))[0])) == pytest.approx(
        stats.invgamma.pdf(t**2, 0.001, scale=0.001) * 2 * t, rel=1e-10)


def test_turner_table_values_and_general():
    assert len(TURNER_OUTCOMES) == 16 and len(TURNER_COMPARISONS) == 5
    assert turner_parameters("general") == (-2.56, 1.74)
    assert turner_parameters("adverse_events", "nonpharma_vs_placebo") == (-2.10, 1.71)
    assert turner_parameters("subjective", "nonpharma_vs_nonpharma") == (-2.26, 1.45)
    assert turner_parameters("all_cause_mortality", "nonpharma_vs_pharma") == (-2.92, 1.02)


def test_lognormal_on_tau_is_not_turner():
    p = parse("lognormal(-1, 0.5)")
    assert p.scale == "tau" and float(p.ppf(0.5)) == pytest.approx(math.exp(-1))


@pytest.mark.parametrize("spec,frag", [
    ("halfnormal(-1)", "must be > 0"), ("halfnormal()", "takes 1 argument"), ("halfnormal(a)", "numbers"),
    ("turner(nonsense)", "turner takes"), ("turner(nonsense, pharma_vs_placebo)", "unknown outcome type"),
    ("turner(pain, sometimes)", "unknown comparison type"), ("gamma(1, 2)", "unknown family"),
    ("uniform(2, 1)", "0 <= a < b"), ("halfnormal 0.5", "name(args)"), ("halfnormal(inf)", "finite"),
])
def test_malformed_specs_rejected(spec, frag):
    with pytest.raises(InputError, match=None) as e:
        parse(spec)
    assert frag in str(e.value)


def test_effect_priors():
    assert parse("normal(0, 4)", "effect").params == (0.0, 4.0)
    p = parse("student_t(3, 0, 2.5)", "effect")
    assert float(p.ppf(0.975)) == pytest.approx(2.5 * stats.t.ppf(0.975, 3))
    with pytest.raises(InputError):
        parse("halfnormal(1)", "effect")


def test_a_new_family_is_one_registry_entry(monkeypatch):
    """Adding a prior family touches one entry of priors.FAMILIES: parsing, densities, quantiles, draws, the
    exact quadrature posterior and the PyMC model all read it (here a gamma prior on tau, not shipped)."""
    import pymc as pm
    from scipy import stats

    from rescuemeta import priors
    from rescuemeta.exact import NormalNormalPosterior
    from rescuemeta.models import ModelData, build_model

    fam = priors.Family("gamma", "tau", ("shape", "rate"), (0, 1), "tau",
                        lambda p: stats.gamma(p[0], scale=1 / p[1]),
                        lambda rng, p, n: rng.gamma(p[0], 1 / p[1], n),
                        lambda pm_, p: pm_.Gamma("tau", alpha=p[0], beta=p[1]))
    monkeypatch.setitem(priors.FAMILIES, "gamma", fam)
    pr = priors.parse("gamma(2, 4)")
    assert pr.family == "gamma" and pr.spec == "gamma(2, 4)"
    with pytest.raises(InputError, match="argument 2 \\(rate\\) must be > 0"):
        priors.parse("gamma(2, 0)")
    x = np.array([0.1, 0.5, 1.0])
    np.testing.assert_allclose(pr.logpdf(x), stats.gamma.logpdf(x, 2, scale=0.25))
    assert pr.ppf(0.5) == pytest.approx(stats.gamma.ppf(0.5, 2, scale=0.25))
    assert pr.sample(np.random.default_rng(1), 20000).mean() == pytest.approx(0.5, rel=0.03)
    ex = NormalNormalPosterior(np.array([0.1, -0.3, 0.4]), np.array([0.2, 0.3, 0.25]), pr)
    assert 0 < ex.tau_quantile(0.5) < 2
    model = build_model(ModelData("normal", {"y": np.array([0.1, -0.3]), "s": np.array([0.2, 0.3])}), pr,
                        priors.parse("normal(0, 4)", "effect"))
    # the model's tau is the family's PyMC variable (log-transformed, as PyMC does for positive variables)
    assert isinstance(model["tau"].owner.op, type(pm.Gamma.dist(2, 4).owner.op))
    assert "tau_log__" in model.initial_point()


@pytest.mark.parametrize("spec,ref", [
    ("halfnormal(0.3)", lambda t: stats.halfnorm.logpdf(t, scale=0.3)),
    ("halfcauchy(0.5)", lambda t: stats.halfcauchy.logpdf(t, scale=0.5)),
    ("halft(3, 0.5)", lambda t: np.log(2) + stats.t.logpdf(t, 3, scale=0.5)),
    ("exponential(2)", lambda t: stats.expon.logpdf(t, scale=0.5)),
    ("lognormal(-1.2, 0.8)", lambda t: stats.lognorm.logpdf(t, 0.8, scale=np.exp(-1.2))),
    # priors on tau^2: the density of tau^2 times d tau^2 / d tau = 2 tau
    ("invgamma(1, 0.1)", lambda t: stats.invgamma.logpdf(t**2, 1, scale=0.1) + np.log(2 * t)),
    ("turner(general)", lambda t: stats.lognorm.logpdf(t**2, 1.74, scale=np.exp(-2.56)) + np.log(2 * t)),
])
def test_shared_tau_graph_density_is_the_family_normalised(spec, ref):
    """Issue 19: in the graph the tau families share, each family's log density is a few kernel terms in the graph
    plus its normalising constant computed outside (``tau_const``). Their sum must be the family's normalised log
    density (scipy, written out here), plus log tau (the Jacobian of tau = exp(tau_log__)), from 0.01 to 50."""
    from rescuemeta import priors
    from rescuemeta.models import ModelData, build_model

    pr = priors.parse(spec)
    model = build_model(ModelData("normal", {"y": np.array([0.1, -0.3]), "s": np.array([0.2, 0.3])}), pr,
                        priors.parse("normal(0, 4)", "effect"))
    pot = next(p for p in model.potentials if p.name == "tau_prior")
    f = model.compile_fn(model.replace_rvs_by_values([pot])[0], inputs=model.value_vars, on_unused_input="ignore",
                         mode="FAST_COMPILE")  # Python implementations: no C compile in an empty compile directory
    for t in (0.01, 0.3, 2.0, 50.0):
        got = float(f({"tau_log__": np.log(t), "u": 0.0, "z": np.zeros(2)}))
        assert got == pytest.approx(ref(t) + np.log(t), abs=1e-9, rel=1e-12), (spec, t)
