"""`rescuemeta freq --mods / --subgroup` (issue 15, frequentist layer): the command line gives metafor's numbers
from a study table whose extra columns are the moderators, and bad moderators are input errors naming the
column; the design matrix follows R's treatment coding."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from rescuemeta.cli import app
from rescuemeta.errors import InputError, NotEstimable
from rescuemeta.metareg import design, rma_mods

from conftest import ROOT

runner = CliRunner()
BCG = str(ROOT / "tests" / "data" / "datasets" / "bcg_mods.csv")
DATA = str(ROOT / "data" / "studies.csv")
REF = json.loads((ROOT / "tests" / "data" / "metareg_reference.json").read_text())


def _ref(**kw):
    return next(c for c in REF["cases"] if all(c[k] == v for k, v in kw.items()))


def test_cli_mods_equals_metafor_on_bcg():
    """dat.bcg, log RR on absolute latitude and allocation, REML, Knapp-Hartung (Viechtbauer 2010, section 4.3
    fits ablat; the reference is metafor 3.8's rma on the same design)."""
    r = runner.invoke(app, ["freq", "--data", BCG, "--measure", "RR", "--mods", "ablat", "--hksj", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    ref = _ref(dataset="bcg_mods", measure="RR", method="REML", hksj=True, mods=["ablat"])["values"]
    for name in ("intrcpt", "ablat"):
        assert d["coefficients"][name]["estimate"] == pytest.approx(ref["coefficients"][name]["estimate"], rel=1e-6)
        assert d["coefficients"][name]["se"] == pytest.approx(ref["coefficients"][name]["se"], rel=1e-6)
    assert d["qm"] == pytest.approx(ref["qm"], rel=1e-6) and d["qm_df"] == [1, 11]
    assert d["tau2"] == pytest.approx(ref["tau2"], rel=1e-6) and d["r2"] == pytest.approx(ref["r2"], rel=1e-6)
    assert d["k"] == 13 and d["mods"] == ["ablat"]
    # the natural scale: the ratio of RRs per degree of latitude
    assert d["natural"]["ablat"]["estimate"] == pytest.approx(np.exp(ref["coefficients"]["ablat"]["estimate"]))


def test_cli_subgroup_on_the_rescue_data():
    # the reference pools the rows' counts (tests/data/datasets/rescue_mods_mortality.csv): --counts-only
    r = runner.invoke(app, ["freq", "--data", DATA, "--outcome", "mortality", "--measure", "OR", "--subgroup",
                            "circulation", "--json", "--all-studies", "--counts-only"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    ref = next(c for c in REF["subgroup_cases"] if c["dataset"] == "rescue_mods_mortality" and c["measure"] == "OR"
               and c["method"] == "REML" and not c["hksj"] and c["column"] == "circulation")["values"]
    assert sorted(d["subgroups"]) == sorted(ref["subgroups"])
    assert d["q_between"] == pytest.approx(ref["q_between"], rel=1e-6)
    assert d["q_between_df"] == ref["q_between_df"]
    for lv, s in d["subgroups"].items():
        assert s["natural"]["estimate"] == pytest.approx(np.exp(ref["subgroups"][lv]["estimate"]), rel=1e-6)
    text = runner.invoke(app, ["freq", "--data", DATA, "--outcome", "mortality", "--subgroup", "circulation",
                               "--all-studies"]).output
    assert "Test for subgroup differences" in text


@pytest.mark.parametrize("args, needle", [
    (["--mods", "latitude"], "'latitude' is not a column of the study table; columns: "),
    (["--mods", "ablat", "--method", "MH"], "inverse-variance method"),
    (["--mods", "ablat", "--subgroup", "alloc"], "two analyses"),
    (["--subgroup", "study_id"], None),  # one study per level: fine, shown not pooled
])
def test_cli_bad_moderators(args, needle):
    r = runner.invoke(app, ["freq", "--data", BCG, "--measure", "RR", *args])
    if needle is None:
        assert r.exit_code == 0, r.output
        return
    assert r.exit_code == 2 and needle in r.stderr and "Traceback" not in r.output


def test_design_treatment_coding_and_refusals():
    cols = {"x": [1, "2", 3.5, None], "g": ["b", "a", "c", "a"], "one": ["z", "z", "z", "z"],
            "dup": [2, 4, 7, None]}
    d = design(cols, ["g", "x"], ["s1", "s2", "s3", "s4"])
    assert d.names == ["intrcpt", "g[b]", "g[c]", "x"] and d.levels == {"g": ["a", "b", "c"]}
    assert d.keep.tolist() == [True, True, True, False] and "s4" in d.notes[0]
    np.testing.assert_array_equal(d.X, [[1, 1, 0, 1], [1, 0, 0, 2], [1, 0, 1, 3.5]])
    with pytest.raises(InputError, match="one level"):
        design(cols, ["one"])
    with pytest.raises(InputError, match="constant"):
        design({"c": [3, 3, 3]}, ["c"])
    with pytest.raises(InputError, match="collinear"):
        design(cols, ["x", "dup"])  # dup = 2 x on the rows kept
    with pytest.raises(InputError, match="not a column"):
        design(cols, ["nope"])
    with pytest.raises(NotEstimable, match="more studies than coefficients"):
        rma_mods(np.array([0.1, 0.2]), np.array([0.1, 0.1]), design({"g": ["a", "b"]}, ["g"]))


def test_intercept_only_equals_rma_iv():
    """With a moderator whose coefficient is forced to carry nothing (a column orthogonal to everything), the
    residual tau^2 machinery reduces to the intercept-only estimators (DL, REML, PM) used by the parity suite."""
    from rescuemeta.freq import rma_iv
    from rescuemeta.metareg import tau2_mods

    rng = np.random.default_rng(4)
    for _ in range(20):
        k = int(rng.integers(3, 12))
        y, v = rng.normal(0, 0.5, k), rng.uniform(0.02, 0.5, k)
        for method in ("DL", "REML", "PM"):
            assert tau2_mods(y, v, np.ones((k, 1)), method) == pytest.approx(rma_iv(y, v, method=method).tau2,
                                                                            rel=1e-12, abs=1e-15)
