"""The abstract check: reproduction of the nine printed estimates and the audit of the printed numbers
(Atwan, Abbas & Serag, conference abstract in shared/seed/abstract.txt)."""

import json
import math
from pathlib import Path

import pytest
from scipy import stats
from typer.testing import CliRunner

from rescuemeta.check import PrintedEstimate, audit, check, load_abstract, parse_p
from rescuemeta.cli import app
from rescuemeta.data import load_studies, select
from rescuemeta.description import load_source
from rescuemeta.freq import meta_analyze

runner = CliRunner()


def _pe(q, est, lo, hi, p="", outcome="x"):
    raw = {"estimate": str(est), "ci_low": str(lo), "ci_high": str(hi)}
    return PrintedEstimate(outcome, q, est, lo, hi, p, raw)


@pytest.fixture(scope="module")
def rows():
    return check(load_studies("data/studies.csv"), load_abstract("data/abstract_estimates.csv"),
                 source=load_source("data/abstract_estimates.csv"))


def _row(rows, outcome, quantity):
    return next(r for r in rows if r["outcome"] == outcome and r["quantity"] == quantity)


def test_nine_estimates_each_reproduced(rows):
    assert len(rows) == 9
    for r in rows:
        assert r["k_abstract"] == 30
        assert len(r["reproductions"]) == 2
        for rep in r["reproductions"]:
            assert rep["available"], rep


def test_sich_rr_flagged_as_impossible(rows):
    flags = _row(rows, "sich", "RR")["audit"]["flags"]
    errs = [f for f in flags if f["severity"] == "error"]
    assert any(f["check"] == "estimate_in_ci" and "equals a CI limit" in f["message"] for f in errs)


def test_mortality_p_greater_than_flagged(rows):
    flags = _row(rows, "mortality", "RR")["audit"]["flags"]
    assert any(f["severity"] == "error" and f["check"] == "p_value" and "typo for '<'" in f["message"]
               for f in flags)


def test_implied_p_by_hand():
    # mortality RR 0.72 (0.63-0.82): se = (log .82 - log .63) / (2 * 1.959964)
    a = audit(_pe("RR", 0.72, 0.63, 0.82, "P > 0.00001"))
    se = (math.log(0.82) - math.log(0.63)) / (2 * stats.norm.ppf(0.975))
    assert a["implied_p"] == pytest.approx(2 * stats.norm.sf(abs(math.log(0.72)) / se), rel=1e-12)
    assert a["midpoint"] == pytest.approx(math.sqrt(0.63 * 0.82), rel=1e-12)


def test_sich_midpoint_explains_printed_p():
    # the CI (0.75-0.99) and P = 0.04 agree with each other; the estimate 0.75 is what is off
    a = audit(_pe("RR", 0.75, 0.75, 0.99, "P = 0.04"))
    assert a["implied_p_midpoint"] == pytest.approx(0.036, abs=0.001)
    assert a["implied_p"] < 1e-4


def test_consistent_numbers_raise_no_flag():
    se = 0.1
    est = 0.7
    lo, hi = est * math.exp(-1.96 * se), est * math.exp(1.96 * se)
    p = 2 * stats.norm.sf(abs(math.log(est)) / se)
    a = audit(_pe("RR", 0.70, round(lo, 2), round(hi, 2), f"P = {p:.4f}"))
    assert a["flags"] == []
    a = audit(_pe("RR", 0.70, round(lo, 2), round(hi, 2), "P < 0.001"))
    assert a["flags"] == []


def test_asymmetric_ci_flagged_and_rate_symmetry_on_logit_scale():
    assert any(f["check"] == "ci_symmetry" for f in audit(_pe("OR", 2.0, 1.5, 5.0))["flags"])
    # reocclusion 13.4% (4.9% to 31.6%) is symmetric on the logit scale
    assert audit(_pe("pooled_rate_treat", 0.134, 0.049, 0.316))["flags"] == []


def test_parse_p():
    assert parse_p("P < 0.0002") == ("<", 0.0002)
    assert parse_p("p=0.04") == ("=", 0.04)
    assert parse_p("P ≤ 0.05") == ("<=", 0.05)
    assert parse_p("") is None and parse_p("significant") is None


def test_reproduction_is_the_engine_on_the_selected_rows(rows):
    t = load_studies("data/studies.csv")
    sel = select(t, "mortality", arms="two")
    res = meta_analyze("RR", "MH", *sel.counts())
    rep = next(x for x in _row(rows, "mortality", "RR")["reproductions"] if x["method"] == "MH")
    assert rep["estimate"] == pytest.approx(math.exp(res.estimate), rel=1e-12)
    assert rep["k"] == sel.k
    assert rep["ratio"] == pytest.approx(math.exp(res.estimate) / 0.72, rel=1e-12)
    assert rep["abstract_inside_our_ci"] == (rep["ci_low"] <= 0.72 <= rep["ci_high"])


def test_no_control_arm_data_is_said(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("outcome,quantity,estimate,ci_low,ci_high,p_value_as_printed\nreocclusion,RR,0.5,0.3,0.8,\n")
    rows = check(load_studies("data/studies.csv"), load_abstract(p))
    reps = rows[0]["reproductions"]
    assert all(not r["available"] for r in reps)
    assert reps[0]["reason"] == "no control-arm data for this outcome"


def test_cli_check_json_and_table():
    res = runner.invoke(app, ["check", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout)  # with published_meta_analyses.csv beside the data: both comparisons
    rows = d["abstract"]
    assert isinstance(rows, list) and len(rows) == 9
    assert {p["source_id"] for p in d["published"]} == {"RodriguezCalienes2023", "Neuroradiology2020", "SVIN2023_ICAS"}
    assert all(p["quote"] and p["url"].startswith("https://") for p in d["published"])
    res = runner.invoke(app, ["check"])
    assert res.exit_code == 0
    assert "abstract (k=30)" in res.stdout and "not the seed abstract's 30" in res.stdout
    flat = " ".join(res.stdout.split())
    assert "error: point estimate 0.75 equals a" in flat and "typo for" in flat
    assert "Other published meta-analyses" in flat and "RodriguezCalienes2023" in flat


def test_published_comparators_against_freq(tmp_path):
    """Ours beside each published ratio is the DL fit of `freq` on the same rows (reported estimates included);
    a bad comparator file names row and column."""
    from rescuemeta.check import compare_published, load_published
    from rescuemeta.data import load_studies

    root = Path(__file__).resolve().parents[1]
    pub = compare_published(load_studies(root / "data" / "studies.csv"),
                            load_published(root / "data" / "published_meta_analyses.csv"))
    for p in pub:
        f = json.loads(runner.invoke(app, ["freq", "--outcome", p["outcome"], "--measure", p["quantity"],
                                           "--method", "DL", "--json"]).stdout)
        assert p["ours"]["estimate"] == pytest.approx(f["natural"]["estimate"], rel=1e-12)
        assert p["ours"]["k"] == f["k"] and p["ours"]["k_reported"] == f["inclusion"]["k_reported"]
    bad = tmp_path / "p.csv"
    bad.write_text("source_id,outcome,quantity,estimate,ci_low,ci_high,k,quote,url\nX,mortality,OR,0.5,0.3,,4,q,u\n")
    res = runner.invoke(app, ["check", "--published", str(bad)])
    assert res.exit_code == 2 and "column 'ci_high'" in res.stderr and "row 1" in res.stderr


def test_bad_abstract_file(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("outcome,quantity,estimate,ci_low,ci_high\nsich,HR,0.5,0.3,0.8\n")
    res = runner.invoke(app, ["check", "--abstract", str(p)])
    assert res.exit_code == 2 and "unknown quantity 'HR'" in res.stderr and "row 1" in res.stderr
