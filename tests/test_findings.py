"""The summary of findings (issue 14): one line per outcome, its probabilities in the declared direction, the
absolute effect at the median study's control risk, and caveats computed from the data, the fits and the grid."""

import pytest

from rescuemeta import pipeline
from rescuemeta.data import load_studies
from rescuemeta.description import Description, OutcomeDescription
from rescuemeta.findings import answer_words, summary_of_findings
from rescuemeta.queries import probability
from rescuemeta.spec import PrimarySpec

from conftest import DATASETS, ROOT

BCG = DATASETS / "bcg_metafor.csv"


@pytest.fixture(scope="module")
def bcg_run():
    spec = PrimarySpec(path="test", models=["normal"])  # exact: no sampling
    return pipeline.run(load_studies(BCG), spec)


def test_one_line_with_probabilities_in_the_declared_direction(bcg_run):
    res = bcg_run.entries[0].result
    lower = Description(outcomes={"bcg_metafor": OutcomeDescription("bcg_metafor", "Tuberculosis", "lower")},
                        randomised=True)
    (row,) = summary_of_findings(bcg_run.entries, lower)
    assert row["outcome"] == "Tuberculosis" and row["evidence"] == "13 comparative studies"
    assert row["p_benefit"] == pytest.approx(probability(res, "OR < 1")["probability"], abs=1e-12)
    assert row["important"] == "OR < 0.8" and row["answer"] == "likely benefit"
    assert row["absolute"].startswith(f"{abs(res.summary()['absolute'][1]['rd_per_1000']['q50']):.0f} fewer per 1000")
    assert not any("non-randomised" in c for c in row["caveats"])
    # the same fit read for an outcome where more events are better: benefit is OR > 1, now unlikely
    higher = Description(outcomes={"bcg_metafor": OutcomeDescription("bcg_metafor", "x", "higher")}, randomised=False)
    (row2,) = summary_of_findings(bcg_run.entries, higher)
    assert row2["p_benefit"] == pytest.approx(1 - row["p_benefit"], abs=1e-12) and row2["answer"] == "likely harm"
    assert row2["important"] == "OR > 1.25"
    assert any("non-randomised" in c for c in row2["caveats"])


def test_caveats_from_the_prediction_interval_and_the_prior_grid(bcg_run):
    desc = Description()
    grid = [{"outcome": "bcg_metafor", "model": "normal", "status": "ok", "p_or_lt_1": p} for p in (0.3, 0.7)]
    (row,) = summary_of_findings(bcg_run.entries, desc, grid)
    assert any("depends on the tau prior: P(benefit) 0.30 to 0.70 across 2 priors" in c for c in row["caveats"])
    new = bcg_run.entries[0].result.summary()["or_new"]
    assert (new["q025"] < 1 < new["q975"]) == any("new study could show benefit or harm" in c for c in row["caveats"])
    (steady,) = summary_of_findings(bcg_run.entries, desc, [{**g, "p_or_lt_1": 0.97} for g in grid])
    assert not any("tau prior" in c for c in steady["caveats"])


def test_single_study_and_no_control_arm_are_said():
    table = load_studies(ROOT / "data" / "studies.csv")
    spec = PrimarySpec(path="test", models=["normal"], outcomes=["recanalization", "reocclusion"])
    rows = {r["name"]: r for r in summary_of_findings(pipeline.run(table, spec).entries, table.description)}
    rec = rows["recanalization"]
    assert rec["evidence"] == "a single comparative study" and any("single study" in c for c in rec["caveats"])
    assert any("non-randomised" in c for c in rec["caveats"])  # data/studies.toml: randomised = false
    assert rows["reocclusion"]["answer"] == "no estimate"


@pytest.mark.parametrize("p, words", [(0.99, "likely benefit"), (0.85, "possible benefit"), (0.5, "uncertain"),
                                      (0.1, "possible harm"), (0.01, "likely harm"), (None, "no comparative estimate")])
def test_answer_words(p, words):
    assert answer_words(p) == words
