"""One pipeline: `fit --all` and `analyze` run the same code (``rescuemeta.pipeline.run``) and give the same
numbers: Bayesian estimates, tau, and the frequentist reference (REML for ratios, GLMM for rates, labelled)."""

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from rescuemeta import pipeline
from rescuemeta.cli import app
from rescuemeta.data import load_studies
from rescuemeta.freq import meta_analyze
from rescuemeta.report import _fmt_ci

from conftest import CI, DATASETS

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
    """Every model kind in one spec (the normal model validated and then crashed analyze before its exact fit
    offered draws)."""
    spec = tmp_path / "spec.toml"
    spec.write_text('sensitivity_tau_priors = ["halfnormal(0.5)"]\nmodels = ["contrast", "proportion", "normal"]\n'
                    'seed = 3\nfigure_formats = ["svg"]\n' + ("draws = 500\n" if CI else ""))
    r = runner.invoke(app, ["fit", "--all", "--data", str(BCG), "--spec", str(spec), "--json"])
    assert r.exit_code == 0, r.output
    rows = {(x["outcome"], x["model"]): x for x in json.loads(r.stdout)}
    out = tmp_path / "report"
    import matplotlib

    backend, font_size = matplotlib.get_backend(), matplotlib.rcParams["font.size"]
    r2 = runner.invoke(app, ["analyze", "--data", str(BCG), "--spec", str(spec), "--out", str(out)],
                       env={"RESCUEMETA_CACHE": str(tmp_path / "cache")})
    assert r2.exit_code == 0, r2.output
    assert len(spy) == 2  # both commands went through pipeline.run
    # the report drew and saved its figures without switching the user's backend or editing rcParams
    assert (matplotlib.get_backend(), matplotlib.rcParams["font.size"]) == (backend, font_size)
    # figure_formats = ["svg"]: an SVG beside every PNG, linked from the report; its words come from the data
    pngs, svgs = sorted((out / "figures").glob("*.png")), sorted((out / "figures").glob("*.svg"))
    assert len(svgs) >= 4 and [p.stem for p in pngs] == [p.stem for p in svgs]
    links = re.findall(r'<a href="figures/([^"]+)"><img src="figures/([^"]+)"', (out / "index.html").read_text())
    assert links and all(a == b[:-4] + ".svg" for a, b in links)
    forest = next((out / "figures").glob("forest_*_contrast.svg")).read_text()
    assert "odds ratio (treatment vs control)" in forest
    assert not any(re.search(r"stent|thrombectomy", p.read_text(), re.IGNORECASE) for p in svgs)
    summary = {(x["outcome"], x["model"]): x for x in
               __import__("pandas").read_csv(out / "tables" / "summary.csv").to_dict("records")}
    assert set(rows) == set(summary) and len(rows) == 3
    # the sensitivity grid covers the spec's outcomes and model kinds (the normal model's rows exact)
    grid = __import__("pandas").read_csv(out / "tables" / "sensitivity.csv")
    assert set(zip(grid["outcome"], grid["model"])) == set(rows)
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
    absolute = __import__("pandas").read_csv(out / "tables" / "absolute.csv")
    assert set(absolute["model"]) == {"contrast", "normal"} and len(absolute) == 6  # 3 assumed control risks each
    page = (out / "index.html").read_text()
    assert "Absolute effects at assumed control risks" in page
    # the summary of findings comes first: one line for the one outcome, answered by its contrast fit
    assert page.index("Summary of findings") < page.index("Absolute effects")
    # every figure says what it shows and how to read it
    assert page.count("<figure>") == page.count("<figcaption>") > 4 and "<figcaption></figcaption>" not in page
    sof = __import__("pandas").read_csv(out / "tables" / "findings.csv")
    assert len(sof) == 1 and sof["evidence"][0] == "13 comparative studies"
    assert (out / "figures" / "forest_bcg_metafor_normal.png").exists()
    assert (out / "figures" / "benefit_curve_bcg_metafor_normal.png").exists()
    probs = __import__("pandas").read_csv(out / "tables" / "probabilities.csv")
    assert set(probs["outcome"]) == {"bcg_metafor"} and len(probs) == 2 * 2 * 3  # 2 ratio fits x 2 x 3 queries


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


def test_exact_fit_draws_follow_the_exact_posterior():
    from scipy import stats

    from rescuemeta.fit import FitConfig, fit

    table = load_studies(BCG)
    res = fit(table, FitConfig(outcome="bcg_metafor", model="normal", measure="RR", draws=2000, chains=4))
    assert res.exact is not None and res.diagnostics is None
    ex = res.exact
    for name in ("mu", "tau"):
        d = res.draws(name).ravel()
        # the draws' CDF at the exact quartiles is within 5 binomial SDs of (0.25, 0.5, 0.75)
        for q in (0.25, 0.5, 0.75):
            x = ex.quantile(name, q)
            assert abs((d <= x).mean() - q) < 5 * np.sqrt(q * (1 - q) / d.size), (name, q)
    # study effects: theta_i's draws against the exact mixture CDF at its median
    theta = res.idata.posterior["theta"].values.reshape(-1, res.k)
    for i in (0, 5, 12):
        x = ex.quantile(i, 0.5)
        assert abs((theta[:, i] <= x).mean() - 0.5) < 5 * np.sqrt(0.25 / theta.shape[0])
    # a new study: theta_new's draws against the exact predictive quartiles
    new = res.draws("mu", predictive=True).ravel()
    for q in (0.1, 0.9):
        assert abs((new <= ex.quantile("theta_new", q)).mean() - q) < 5 * np.sqrt(q * (1 - q) / new.size)
    assert stats.kstest(res.draws("tau").ravel(), lambda t: ex.tau_cdf(t)).pvalue > 1e-4


def test_a_new_model_kind_is_one_registry_entry(monkeypatch):
    """Adding a model kind touches one entry of kinds.MODEL_KINDS: here the normal model restricted to log RR,
    registered under a new name, goes through FitConfig, fit, its summary, the queries and the pipeline's
    frequentist reference without any other change."""
    from dataclasses import replace

    from rescuemeta import kinds
    from rescuemeta.fit import FitConfig, fit
    from rescuemeta.queries import probability

    monkeypatch.setitem(kinds.MODEL_KINDS, "normal_rr", replace(kinds.MODEL_KINDS["normal"], name="normal_rr",
                                                                measures=("RR",)))
    table = load_studies(BCG)
    cfg = FitConfig(outcome="bcg_metafor", model="normal_rr", measure="OR", draws=500)
    assert cfg.effect_measure == "RR"  # the kind's only measure, whatever the config asked
    res = fit(table, cfg)
    s = res.summary()
    ref = fit(table, FitConfig(outcome="bcg_metafor", model="normal", measure="RR", draws=500)).summary()
    assert s["rr"]["q50"] == pytest.approx(ref["rr"]["q50"], rel=1e-12)
    assert probability(res, "RR < 1")["probability"] == pytest.approx(0.99, abs=0.01)
    assert pipeline.frequentist_reference(table, cfg, "RR").method == "REML"
    with pytest.raises(Exception, match="unknown model 'nope'; choose from .*normal_rr"):
        FitConfig(outcome="bcg_metafor", model="nope").validate()


def test_plots_draw_on_the_axes_they_are_given():
    """ArviZ style: each plot takes axes and returns them, saves nothing and creates no pyplot figure."""
    import matplotlib.pyplot as plt

    from rescuemeta import figures, plots
    from rescuemeta.fit import FitConfig, fit

    res = fit(load_studies(BCG), FitConfig(outcome="bcg_metafor", model="normal", measure="RR", draws=300))
    before = plt.get_fignums()
    fig, ax = figures.new((6, 6))
    assert plots.forest(res, "RR", ax=ax) is ax
    assert len(ax.get_yticklabels()) >= res.k and ax.get_xscale() == "log"
    _, axes = figures.new((8, 3), 1, 2)
    assert plots.densities(res, axes=axes) is axes
    _, ax2 = figures.new((5, 3))
    assert plots.benefit_curve(res, "RR", ax=ax2) is ax2 and len(ax2.lines) >= 2
    assert plt.get_fignums() == before


def test_a_single_study_is_not_drawn_as_a_meta_analysis():
    """k = 1 (recanalization's one comparative study): no pooled diamond, rows and title say 'single study'."""
    from matplotlib.patches import Polygon

    from rescuemeta import figures, plots
    from rescuemeta.fit import FitConfig, fit

    from conftest import ROOT

    res = fit(load_studies(ROOT / "data" / "studies.csv"),
              FitConfig(outcome="recanalization", model="normal", measure="OR", draws=300))
    assert res.k == 1
    _, ax = figures.new((6, 4))
    plots.forest(res, "OR", ax=ax)
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert any("single study: no pooling" in t for t in labels) and "Bayesian pooled" not in labels
    assert not [p for p in ax.patches if isinstance(p, Polygon)]  # no diamond
    assert "a single study" in ax.get_title()


def test_log_axes_read_as_plain_numbers():
    """Ratio axes show 0.5, 1, 2, not 3x10^-1 or LaTeX powers, even when the data span less than a decade."""
    from rescuemeta import figures, plots
    from rescuemeta.fit import FitConfig, fit

    res = fit(load_studies(BCG), FitConfig(outcome="bcg_metafor", model="normal", measure="RR", draws=200))
    fig, ax = figures.new((6, 6))
    plots.forest(res, "RR", ax=ax)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels and all("$" not in t and "times" not in t and "×" not in t for t in labels), labels
    assert all(float(t) > 0 for t in labels)


def test_probability_table_is_compact():
    """Pooled and new-study probabilities side by side, in percent, the MCSE only where it reaches 0.5 points."""
    import pandas as pd

    from rescuemeta.report import _compact_probabilities

    df = pd.DataFrame([
        {"outcome": "m", "query": "RR < 1", "predictive": False, "probability": 0.973, "mcse": 0.002, "draws": 4000,
         "benefit": "fewer events", "control_risk": "0.455 (median)"},
        {"outcome": "m", "query": "RR < 1", "predictive": True, "probability": 0.81, "mcse": 0.008, "draws": 4000,
         "benefit": "fewer events", "control_risk": "0.455 (median)"},
        {"outcome": "m", "query": "OR < 1", "predictive": False, "probability": 0.98, "mcse": 0.002, "draws": 4000,
         "benefit": "fewer events", "control_risk": None},
        {"outcome": "m", "query": "OR < 1", "predictive": True, "probability": 0.9, "mcse": 0.002, "draws": 4000,
         "benefit": "fewer events", "control_risk": None}])
    assert _compact_probabilities(df).to_dict("records") == [
        {"outcome": "m", "query": "RR < 1", "pooled effect": "97%", "new study": "81% (MCSE 0.8 points)",
         "at control risk": "0.455 (median)", "benefit": "fewer events"},
        {"outcome": "m", "query": "OR < 1", "pooled effect": "98%", "new study": "90%", "at control risk": "—",
         "benefit": "fewer events"}]
