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
    dens = lambda t: float(np.exp(p.logpdf(np.array([t]))[0]))  # noqa: E731
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
