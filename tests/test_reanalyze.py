"""`rescuemeta reanalyze`: conjugate normal re-analysis of published pooled ratios (Spiegelhalter, Freedman &
Parmar 1994 priors), checked against the closed form, against NUTS on the same model, and on the abstract."""

import json
import math

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from rescuemeta.cli import app
from rescuemeta.errors import InputError
from rescuemeta.reanalyze import PublishedEstimate, named_prior, posterior, reanalyze

from conftest import ROOT
from helpers import check_against_nuts

runner = CliRunner()
ABSTRACT = str(ROOT / "data" / "abstract_estimates.csv")


def test_named_priors_match_their_definitions():
    n = named_prior("neutral")
    assert stats.norm.cdf(math.log(2), n.mean, n.sd) - stats.norm.cdf(math.log(0.5), n.mean, n.sd) == pytest.approx(0.95)
    sk = named_prior("skeptical", 0.8)
    assert stats.norm.cdf(math.log(0.8), sk.mean, sk.sd) == pytest.approx(0.05)
    en = named_prior("enthusiastic", 0.8)
    assert en.mean == pytest.approx(math.log(0.8)) and 1 - stats.norm.cdf(0, en.mean, en.sd) == pytest.approx(0.05)
    pe = named_prior("pessimistic", 0.8)
    assert pe.mean == pytest.approx(-math.log(0.8)) and stats.norm.cdf(0, pe.mean, pe.sd) == pytest.approx(0.05)
    # for an outcome where more events are better, the important effect is > 1 and the same definitions hold
    en2 = named_prior("enthusiastic", 1.25)
    assert stats.norm.cdf(0, en2.mean, en2.sd) == pytest.approx(0.05)
    c = named_prior("normal(0.1, 0.3)")
    assert (c.mean, c.sd) == (0.1, 0.3)


def test_posterior_is_the_conjugate_normal():
    est = PublishedEstimate("RR", 0.72, 0.63, 0.82)
    se = (math.log(0.82) - math.log(0.63)) / (2 * 1.959963984540054)
    assert est.se == pytest.approx(se)
    r = reanalyze(est, ["normal(0, 0.5)"], thresholds=[1, 0.8])["results"][0]
    w = 1 / se**2 / (1 / se**2 + 1 / 0.25)
    m, s = w * math.log(0.72), math.sqrt(1 / (1 / se**2 + 4))
    assert r["median"] == pytest.approx(math.exp(m))
    assert r["ci_low"] == pytest.approx(math.exp(m - 1.959963984540054 * s))
    assert r["probabilities"][1]["probability"] == pytest.approx(stats.norm.cdf((math.log(0.8) - m) / s))
    # a very vague prior returns the published line itself
    flat = reanalyze(est, ["normal(0, 1000)"])["results"][0]
    assert flat["median"] == pytest.approx(0.72, rel=1e-6)
    assert (flat["ci_low"], flat["ci_high"]) == pytest.approx((0.72 * 0.63 / math.sqrt(0.63 * 0.82),
                                                               0.72 * 0.82 / math.sqrt(0.63 * 0.82)), rel=1e-5)


def test_nuts_on_the_same_model_agrees():
    est = PublishedEstimate("RR", 0.75, 0.75, 0.99)
    pr = named_prior("skeptical")
    m, s = posterior(est, pr)
    draws = check_against_nuts(est, pr, draws=4000, seed=3).ravel()
    mcse = s / math.sqrt(len(draws) / 2)  # conservative: ESS >= half the draws on this 1-D model
    assert np.mean(draws) == pytest.approx(m, abs=4 * mcse)
    assert np.std(draws) == pytest.approx(s, rel=0.05)
    for t in (1.0, 0.9, 0.8):
        p = stats.norm.cdf((math.log(t) - m) / s)
        assert np.mean(draws < math.log(t)) == pytest.approx(p, abs=4 * math.sqrt(p * (1 - p) / 2000) + 1e-3)


def test_flags_the_sich_line():
    est = PublishedEstimate("RR", 0.75, 0.75, 0.99, label="sich RR")
    f = est.flags()
    assert any("equals a CI limit" in x for x in f)
    assert any("asymmetric" in x for x in f)
    assert any("SE 0.0708" in x for x in f)  # says which SE was used
    assert PublishedEstimate("RR", 0.72, 0.63, 0.82).flags() == []
    outside = PublishedEstimate("OR", 2.0, 0.5, 1.5).flags()
    assert any("outside" in x for x in outside)
    mid = PublishedEstimate("RR", 0.75, 0.75, 0.99, center="midpoint")
    assert mid.y == pytest.approx(math.log(math.sqrt(0.75 * 0.99)))


def test_cli_from_abstract():
    r = runner.invoke(app, ["reanalyze", "--from-abstract", "--abstract", ABSTRACT, "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert len(rows) == 4 * 5  # FI RR, mortality RR, sICH RR, recanalization OR x five named priors
    assert {x["outcome"] for x in rows} == {"functional_independence", "mortality", "sich", "recanalization"}
    for x in rows:
        assert {"prior", "median", "ci_low", "ci_high", "probabilities"} <= set(x)
        # benefit in each outcome's declared direction (data/studies.toml): more events are better for functional
        # independence and recanalization, so their thresholds are mirrored
        higher = x["outcome"] in ("functional_independence", "recanalization")
        want = [1.0, 1 / 0.9, 1.25] if higher else [1.0, 0.9, 0.8]
        assert [p["threshold"] for p in x["probabilities"]] == pytest.approx(want)
        assert all(p["query"].startswith("ratio >" if higher else "ratio <") for p in x["probabilities"])
        assert x["ci_low"] < x["median"] < x["ci_high"]
    fi = [x for x in rows if x["outcome"] == "functional_independence" and x["prior"] == "neutral"][0]
    m, s = math.log(fi["median"]), fi["log_sd"]
    assert fi["probabilities"][2]["probability"] == pytest.approx(stats.norm.sf((math.log(1.25) - m) / s), rel=1e-9)
    sich = [x for x in rows if x["outcome"] == "sich"][0]
    assert sich["input"]["flags"]
    r = runner.invoke(app, ["reanalyze", "--from-abstract", "--abstract", ABSTRACT])
    assert "warning" in r.stderr and "sich RR" in r.stderr


def test_cli_single_line_with_priors_and_thresholds():
    r = runner.invoke(app, ["reanalyze", "--measure", "RR", "--estimate", "0.72", "--ci", "0.63", "0.82", "--prior",
                            "skeptical", "--prior", "normal(0, 0.2)", "--threshold", "1", "--threshold", "0.7", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [x["prior"] for x in rows] == ["skeptical", "normal(0, 0.2)"]
    assert [p["threshold"] for p in rows[0]["probabilities"]] == [1.0, 0.7]


@pytest.mark.parametrize("args, needle", [
    (["--measure", "RR", "--estimate", "0.72"], "--ci"),
    (["--measure", "RR", "--estimate", "0.72", "--ci", "0.9", "0.6"], "low < high"),
    (["--measure", "RR", "--estimate", "-1", "--ci", "0.6", "0.9"], "positive ratio"),
    (["--measure", "RR", "--estimate", "0.7", "--ci", "0.6", "0.9", "--prior", "cauchy(0, 1)"], "not one of"),
    (["--measure", "RR", "--estimate", "0.7", "--ci", "0.6", "0.9", "--prior", "student_t(3, 0, 1)"], "normal(m, s)"),
    (["--measure", "RR", "--estimate", "0.7", "--ci", "0.6", "0.9", "--threshold", "-1"], "--threshold"),
    (["--measure", "RR", "--estimate", "0.7", "--ci", "0.6", "0.9", "--important", "1"], "--important"),
    (["--from-abstract", "--estimate", "0.7"], "--from-abstract"),
    (["--measure", "HR", "--estimate", "0.7", "--ci", "0.6", "0.9"], "HR"),
])
def test_cli_bad_input(args, needle):
    r = runner.invoke(app, ["reanalyze", *args])
    assert r.exit_code == 2, r.output
    assert needle in r.output


def test_input_error_type():
    with pytest.raises(InputError):
        PublishedEstimate("RR", 0.7, 0.6, 0.9, center="mean")


def test_irregular_line_is_centred_where_its_printed_p_agrees():
    """The sICH line RR 0.75 (0.75-0.99), P = 0.04 (Cochrane Handbook 6.3.2: a CI's midpoint on the log scale is
    the estimate it was computed from): the CI midpoint implies p = 0.036, which the printed 0.04 matches; the
    printed estimate implies 5e-5. 'auto' takes the midpoint and says why; P(RR < 1) is no longer 1.000."""
    est = PublishedEstimate("RR", 0.75, 0.75, 0.99, center="auto", label="sich RR", p_text="P = 0.04")
    assert est.used_center == "midpoint" and "matches the printed 'P = 0.04'" in est.center_reason
    assert est.implied_p("midpoint") == pytest.approx(0.036, abs=0.001)
    r = reanalyze(est, ["normal(0, 1000)"])
    assert r["input"]["center"] == "midpoint" and r["input"]["p_printed"] == "P = 0.04"
    assert r["results"][0]["probabilities"][0]["probability"] == pytest.approx(1 - 0.036 / 2, abs=0.002)
    # a regular line keeps its estimate; an irregular one that no printed p decides is refused
    assert PublishedEstimate("RR", 0.72, 0.63, 0.82, center="auto").used_center == "estimate"
    with pytest.raises(InputError, match="--center estimate or --center midpoint"):
        PublishedEstimate("RR", 0.75, 0.75, 0.99, center="auto")
    with pytest.raises(InputError, match="cannot decide"):
        PublishedEstimate("RR", 0.75, 0.75, 0.99, center="auto", p_text="P < 0.05")  # both implied p's are < 0.05
    assert PublishedEstimate("RR", 0.75, 0.75, 0.99, center="estimate").used_center == "estimate"


def test_cli_from_abstract_states_the_centre_it_used():
    r = runner.invoke(app, ["reanalyze", "--from-abstract", "--abstract", ABSTRACT, "--json"])
    sich = [x for x in json.loads(r.stdout) if x["outcome"] == "sich"]
    assert {x["input"]["center"] for x in sich} == {"midpoint"}
    assert all("matches the printed" in x["input"]["center_reason"] for x in sich)
    r = runner.invoke(app, ["reanalyze", "--from-abstract", "--abstract", ABSTRACT])
    flat = "".join(ch for ch in r.stderr if not ch.isspace())  # the console wraps long lines
    assert "centretheCI'slogmidpoint" in flat and "whythiscentre:theCImidpoint" in flat
    bad = runner.invoke(app, ["reanalyze", "--measure", "RR", "--estimate", "0.75", "--ci", "0.75", "0.99"])
    assert bad.exit_code == 2 and "--center" in bad.output


def test_reference_prior_and_precision_ratio():
    """The reference prior leaves the likelihood (posterior median = the line's centre to 1e-4); every result
    reports SE^2 / prior SD^2, so a reader sees when a prior outweighs the data (the skeptical prior with R = 0.8
    does for the sICH line: its SD 0.136 against the line's SE 0.071 gives 0.27; a tight normal(0, 0.05) gives 2)."""
    est = PublishedEstimate("RR", 0.72, 0.63, 0.82)
    r = reanalyze(est, ["reference", "skeptical", "normal(0, 0.05)"])["results"]
    ref, sk, tight = r
    assert ref["median"] == pytest.approx(0.72, rel=1e-4)
    assert ref["precision_ratio"] == pytest.approx(est.se**2 / 100, rel=1e-12)
    assert sk["precision_ratio"] == pytest.approx(est.se**2 / (math.log(0.8) / 1.6448536269514722) ** 2, rel=1e-9)
    assert tight["precision_ratio"] == pytest.approx(est.se**2 / 0.05**2) and tight["precision_ratio"] > 1
