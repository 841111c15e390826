"""`rescuemeta freq` CLI contract (later tooling depends on it)."""

import json
import math

import pytest
from scipy.special import expit
from typer.testing import CliRunner

from rescuemeta.cli import app

runner = CliRunner()
KEYS = {"estimate", "se", "ci_low", "ci_high", "pval", "tau2", "i2", "q", "k", "pi_low", "pi_high", "natural"}


def _freq(*args):
    res = runner.invoke(app, ["freq", *args])
    assert res.exit_code == 0, res.output
    return res


@pytest.mark.parametrize("measure,method", [("OR", "DL"), ("OR", "REML"), ("RR", "PM"), ("RD", "DL"),
                                            ("OR", "MH"), ("RR", "MH"), ("OR", "PETO")])
def test_two_arm_json_contract(measure, method):
    d = json.loads(_freq("--outcome", "mortality", "--measure", measure, "--method", method, "--json").stdout)
    assert KEYS <= set(d)
    assert set(d["natural"]) == {"estimate", "ci_low", "ci_high"}
    f = (lambda x: x) if measure == "RD" else math.exp
    assert d["natural"]["estimate"] == pytest.approx(f(d["estimate"]))
    assert d["natural"]["ci_low"] == pytest.approx(f(d["ci_low"]))
    assert d["ci_low"] < d["estimate"] < d["ci_high"]
    assert d["k"] == 5
    if method in ("MH", "PETO"):
        assert d["pi_low"] is None and d["tau2"] == 0
    else:
        assert d["pi_low"] <= d["ci_low"]


def test_plo_and_glmm_back_transform():
    for method in ("DL", "REML", "GLMM"):
        d = json.loads(_freq("--outcome", "recanalization", "--measure", "PLO", "--method", method,
                             "--json").stdout)
        assert d["natural"]["estimate"] == pytest.approx(float(expit(d["estimate"])))
        assert 0 < d["natural"]["ci_low"] < d["natural"]["estimate"] < d["natural"]["ci_high"] < 1
        assert d["k"] == 10


def test_hksj_widens_with_t_quantiles():
    z = json.loads(_freq("--outcome", "mortality", "--measure", "RR", "--method", "DL", "--json").stdout)
    t = json.loads(_freq("--outcome", "mortality", "--measure", "RR", "--method", "DL", "--hksj", "--json").stdout)
    assert t["hksj"] and t["estimate"] == pytest.approx(z["estimate"])
    assert t["ci_high"] - t["ci_low"] != pytest.approx(z["ci_high"] - z["ci_low"])


def test_all_studies_and_exclude_basis_change_k():
    base = json.loads(_freq("--outcome", "mortality", "--measure", "PLO", "--json").stdout)
    alls = json.loads(_freq("--outcome", "mortality", "--measure", "PLO", "--all-studies", "--json").stdout)
    excl = json.loads(_freq("--outcome", "mortality", "--measure", "PLO", "--exclude-basis",
                            "approximate,denominator_fitted", "--json").stdout)
    assert alls["k"] == 14 > base["k"] == 11
    assert excl["k"] < base["k"]
    assert "excluding count_basis" in excl["inclusion"]["rule"]


def test_readable_table_states_inclusion_and_evidence_base():
    out = _freq("--outcome", "sich", "--measure", "RR", "--method", "MH").stdout
    assert "Inclusion:" in out and "Excluded:" in out
    assert "not the seed abstract's 30" in out


def test_all_outcomes_json():
    rows = json.loads(_freq("--all", "--json").stdout)
    outcomes = {r["outcome"] for r in rows}
    assert outcomes == {"functional_independence", "mortality", "sich", "recanalization", "reocclusion"}
    reo = [r for r in rows if r["outcome"] == "reocclusion" and r["measure"] != "PLO"]
    assert reo and all("unavailable" in r for r in reo)


def test_keep_double_zero_option(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("study_id,outcome,events_treat,total_treat,events_control,total_control\n"
                 "A,m,0,10,0,12\nB,m,3,10,5,10\nC,m,2,20,6,20\n")
    drop = json.loads(_freq("--data", str(p), "--outcome", "m", "--measure", "OR", "--method", "DL",
                            "--json").stdout)
    keep = json.loads(_freq("--data", str(p), "--outcome", "m", "--measure", "OR", "--method", "DL",
                            "--keep-double-zero", "--json").stdout)
    assert drop["k"] == 2 and keep["k"] == 3
