"""One pipeline: `fit --all` and `analyze` run the same code (``rescuemeta.pipeline.run``) and give the same
numbers: Bayesian estimates, tau, and the frequentist reference (REML for ratios, GLMM for rates, labelled)."""

import json

import pytest
from typer.testing import CliRunner

from conftest import CI, DATASETS
from rescuemeta import pipeline
from rescuemeta.cli import app
from rescuemeta.data import load_studies
from rescuemeta.freq import meta_analyze
from rescuemeta.report import _fmt_ci

runner = CliRunner()
BCG = DATASETS / "bcg_metafor.csv"


@pytest.fixture
def spy(monkeypatch):
    calls = []
    real = pipeline.run

    def wrapped(*a, **k):
        out = real(*a, **k)
        calls.append(out)
        return out

    monkeypatch.setattr(pipeline, "run", wrapped)
    return calls


def test_fit_all_and_analyze_share_one_pipeline_and_agree(tmp_path, spy):
    spec = tmp_path / "spec.toml"
    spec.write_text('sensitivity_tau_priors = ["halfnormal(0.5)"]\nmodels = ["contrast", "proportion"]\n'
                    'seed = 3\n' + ("draws = 500\n" if CI else ""))
    r = runner.invoke(app, ["fit", "--all", "--data", str(BCG), "--spec", str(spec), "--json"])
    assert r.exit_code == 0, r.output
    rows = {(x["outcome"], x["model"]): x for x in json.loads(r.stdout)}
    out = tmp_path / "report"
    r2 = runner.invoke(app, ["analyze", "--data", str(BCG), "--spec", str(spec), "--out", str(out)],
                       env={"RESCUEMETA_CACHE": str(tmp_path / "cache")})
    assert r2.exit_code == 0, r2.output
    assert len(spy) == 2  # both commands went through pipeline.run
    summary = {(x["outcome"], x["model"]): x for x in
               __import__("pandas").read_csv(out / "tables" / "summary.csv").to_dict("records")}
    assert set(rows) == set(summary) and len(rows) == 2
    for key, row in rows.items():
        s = summary[key]
        q = "rate" if key[1] == "proportion" else "or"
        assert s["Bayesian median (95% CrI)"] == _fmt_ci(row[q]["q50"], row[q]["q025"], row[q]["q975"])
        assert s["tau median (95% CrI)"] == _fmt_ci(row["tau"]["q50"], row["tau"]["q025"], row["tau"]["q975"])
        f = row["frequentist"]
        assert s["frequentist"] == f"{_fmt_ci(f['estimate'], f['ci_low'], f['ci_high'])} [{f['label']}]"
    # the draws themselves are the same: the two runs' entries hold identical posteriors
    a, b = spy
    for ea, eb in zip(a.entries, b.entries):
        assert (ea.result.idata.posterior["mu"].values == eb.result.idata.posterior["mu"].values).all()


def test_frequentist_reference_is_reml_for_ratios_and_glmm_for_rates():
    table = load_studies(BCG)
    run = pipeline.run(table, __import__("rescuemeta.spec", fromlist=["x"]).load_primary(None),
                       draws=300 if CI else 1000)
    by_model = {e.model: e for e in run.entries}
    ref = by_model["contrast"].reference
    assert (ref.measure, ref.method) == ("OR", "REML") and "OR REML (k=13)" == ref.label
    sel_counts = [table.frame[c].to_numpy(float) for c in ("events_treat", "total_treat", "events_control",
                                                           "total_control")]
    assert ref.estimate == pytest.approx(meta_analyze("OR", "REML", *sel_counts).natural["estimate"], rel=1e-12)
    rate = by_model["proportion"].reference
    assert (rate.measure, rate.method) == ("PLO", "GLMM")
    # contrast fits carry the spec's probability queries, pooled and predictive
    assert {p["predictive"] for p in by_model["contrast"].probabilities} == {False, True}
    assert by_model["proportion"].probabilities == []


def test_reported_measure_follows_the_published_estimate():
    class A:
        def __init__(self, outcome, quantity):
            self.outcome, self.quantity = outcome, quantity

    pub = [A("m", "OR"), A("m", "RR"), A("s", "OR")]
    assert pipeline.reported_measure("contrast", "m", pub) == "RR"
    assert pipeline.reported_measure("contrast", "s", pub) == "OR"
    assert pipeline.reported_measure("contrast", "x", pub, default="RR") == "RR"
    assert pipeline.reported_measure("proportion", "m", pub) == "PLO"
