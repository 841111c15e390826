"""Any user's data, first-class: a metafor user's CSV (the BCG vaccine trials with metafor's column names, one
outcome, no description) gets the same analysis and report as the flagship data, in neutral words; every word
about rescue stenting comes from data/studies.toml, never from the package's code."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from rescuemeta.cli import app
from rescuemeta.data import load_studies
from rescuemeta.description import load_description

from conftest import CI, DATASETS, ROOT

runner = CliRunner()
BCG = DATASETS / "bcg_metafor.csv"  # trial, author, year, tpos, tneg, cpos, cneg (metafor's dat.bcg)
RESCUE_WORDS = re.compile(r"stent|thrombectomy|abstract's 30|20 studies", re.IGNORECASE)


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_no_rescue_stenting_words_in_the_package_code():
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "src").rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if RESCUE_WORDS.search(line)]
    assert hits == []


def test_the_rescue_description_lives_in_data():
    d = load_description(ROOT / "data" / "studies.csv")
    assert d.title.startswith("Rescue intracranial stenting") and d.treatment == "rescue stenting"
    assert d.better("functional_independence") == "higher" and d.better("mortality") == "lower"
    assert "20 studies" in d.evidence_note


def test_bcg_with_metafor_names_matches_metafor(tmp_path, metafor_reference):
    """tpos/tneg/cpos/cneg are 2x2 cells (totals tpos + tneg, cpos + cneg); one outcome, so no --outcome. The
    pooled RR equals metafor's rma(measure="RR", method="REML") on dat.bcg (pinned reference)."""
    csv = tmp_path / "bcg.csv"
    csv.write_bytes(BCG.read_bytes())
    r = _run("freq", "--data", csv, "--measure", "RR", "--method", "REML", "--json")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["outcome"] == "bcg" and d["k"] == 13 and d["evidence_note"] is None
    ref = next(c["values"] for c in metafor_reference["cases"] if c["dataset"] == "bcg" and c["measure"] == "RR"
               and c["method"] == "REML" and not c["hksj"] and c["drop00"])
    for key in ("estimate", "se", "tau2", "pval", "ci_low", "ci_high"):
        assert d[key] == pytest.approx(ref[key], rel=1e-6), key
    assert [s["study_id"] for s in d["studies"]] == [s for s in d["inclusion"]["included"]]
    assert sum(s["weight"] for s in d["studies"]) == pytest.approx(100)


def test_column_names_are_case_insensitive_with_a_hint_for_near_misses(tmp_path):
    ok = tmp_path / "ok.csv"
    ok.write_text("Study_ID,Events_Treat,N1I\nA,3,10\nB,4,12\n")
    t = load_studies(ok)
    assert list(t.frame["total_treat"]) == [10, 12] and t.outcomes == ["ok"]
    bad = tmp_path / "bad.csv"
    bad.write_text("study_id,event_treat,total_treat\nA,3,10\n")
    r = _run("freq", "--data", bad, "--measure", "PLO")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert "events_treat (did you mean 'event_treat'?)" in r.stderr


def test_messages_show_plain_numbers_not_numpy_reprs(tmp_path):
    bad = tmp_path / "neg.csv"
    bad.write_text("study_id,ai,n1i,ci,n2i\nA,-6,10,2,10\n")
    r = _run("freq", "--data", bad)
    assert r.exit_code == 2 and "np." not in r.stderr and "-6" in r.stderr
    assert "column 'ai'" in r.stderr  # named as the file names it


def test_default_paths_say_which_option_to_pass(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = _run("freq")
    assert r.exit_code == 2 and "pass --data FILE" in r.stderr
    r = _run("check", "--data", BCG)
    assert r.exit_code == 2 and "pass --abstract FILE" in r.stderr


def test_measure_is_refused_where_the_model_does_not_use_it():
    r = _run("fit", "--data", BCG, "--model", "contrast", "--measure", "RR")
    assert r.exit_code == 2 and "--measure applies to the normal model only" in r.stderr


def test_freq_prints_p_values_studies_and_says_when_k_is_1(tmp_path):
    r = _run("freq", "--data", BCG, "--measure", "RR", "--studies")
    assert r.exit_code == 0 and "< 0.0001" in r.stdout and "weight %" in r.stdout
    one = tmp_path / "one.csv"
    one.write_text("study_id,ai,n1i,ci,n2i\nA,3,10,5,10\n")
    r = _run("freq", "--data", one)
    assert r.exit_code == 0 and "k = 1: a single study" in r.stdout and "no prediction interval" in r.stdout


def test_exact_model_moments_that_do_not_exist_are_null_without_warnings():
    """A log-normal prior on tau^2 (Turner) gives the predictive ratio an infinite mean: JSON null, not 3e56."""
    import warnings

    args = ["fit", "--data", ROOT / "data" / "studies.csv", "--outcome", "mortality", "--model", "normal",
            "--measure", "RR", "--tau-prior", "turner(all_cause_mortality, nonpharma_vs_pharma)", "--json"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # an overflow in the moments would fail the command
        r = runner.invoke(app, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["rr_new"]["mean"] is None and d["rr_new"]["sd"] is None
    assert 0.3 < d["rr_new"]["q50"] < 1.2 and d["rr"]["mean"] is not None  # the pooled RR's moments exist


def test_fit_and_prob_on_bcg_never_mention_the_flagship():
    r = _run("fit", "--data", BCG, "--model", "normal", "--measure", "RR", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["evidence_note"] is None and s["arms"] == {"treatment": "treatment", "control": "control"}
    r = _run("prob", "--data", BCG, "--model", "normal", "--measure", "RR", "RR < 1", "NNT < 50")
    assert r.exit_code == 0, r.output
    assert not RESCUE_WORDS.search(r.output)


@pytest.fixture(scope="module")
def bcg_report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bcg")
    csv = tmp / "bcg.csv"
    csv.write_bytes(BCG.read_bytes())
    args = ["analyze", "--data", csv, "--out", tmp / "report"] + (["--draws", "500"] if CI else [])
    r = runner.invoke(app, [str(a) for a in args], env={"RESCUEMETA_CACHE": str(tmp / "cache")})
    return r, tmp / "report"


def test_analyze_on_any_csv_without_spec_or_abstract(bcg_report):
    r, out = bcg_report
    assert r.exit_code == 0, r.output
    html = (out / "index.html").read_text()
    assert "Meta-analysis of bcg.csv" in html
    # PNG only unless a spec asks for more (test_pipeline checks the SVGs' words with figure_formats)
    assert (out / "figures" / "forest_bcg_contrast.png").exists() and not list((out / "figures").glob("*.svg"))
    texts = [html] + [p.read_text() for p in (out / "tables").glob("*.csv")]
    assert not any(RESCUE_WORDS.search(t) for t in texts)
    assert "abstract" not in html.lower()  # no check against published estimates unless --abstract is given


def test_a_partly_failed_analysis_still_writes_its_report(tmp_path, monkeypatch):
    """A fit that fails its guard: exit 3, the report is written, and the failure is stated where the result
    would be."""
    from rescuemeta.errors import ConvergenceError
    from rescuemeta.sampling import Sampler

    real = Sampler.sample

    def failing(self, data, *a, **k):
        if data.kind == "proportion":
            raise ConvergenceError("sampling did not converge (forced by the test)",
                                   {"rhat_max": 1.2, "ess_bulk_min": 12.0, "ess_tail_min": 9.0, "divergences": 3})
        return real(self, data, *a, **k)

    monkeypatch.setattr(Sampler, "sample", failing)
    spec = tmp_path / "spec.toml"
    spec.write_text('sensitivity_tau_priors = ["halfnormal(0.5)"]\nmodels = ["contrast", "proportion"]\n'
                    + ("draws = 300\n" if CI else ""))
    out = tmp_path / "report"
    r = runner.invoke(app, ["analyze", "--data", str(BCG), "--spec", str(spec), "--out", str(out)],
                      env={"RESCUEMETA_CACHE": str(tmp_path / "cache")})
    assert r.exit_code == 3, r.output
    assert "Traceback" not in r.output
    html = (out / "index.html").read_text()
    assert "failed its convergence guard" in html and "bcg_metafor (proportion)" in html


def test_cli_startup_loads_no_sampling_or_plotting_library():
    """--help, --version, check and freq import neither PyMC, ArviZ, numba nor matplotlib (a new process
    each; what they import, not how long they take, is what a test can check on any machine)."""
    heavy = ("pymc", "arviz", "numba", "matplotlib", "pytensor", "nutpie", "xarray")
    code = ("import sys; from rescuemeta.cli import app\n"
            "try:\n    app(sys.argv[1:], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            f"print([m for m in {heavy!r} if m in sys.modules])")
    runs = [["--help"], ["--version"], ["freq", "--data", str(BCG), "--json"],
            ["check", "--data", str(ROOT / "data" / "studies.csv"), "--abstract",
             str(ROOT / "data" / "abstract_estimates.csv"), "--json"]]
    for args in runs:
        p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip().splitlines()[-1] == "[]", (args, p.stdout[-300:])
    p = subprocess.run([sys.executable, "-c", "import sys, rescuemeta.freq, rescuemeta.data; "
                        "print('pymc' in sys.modules)"], capture_output=True, text=True)
    assert p.stdout.strip() == "False"


def test_freq_with_default_methods_loads_no_scipy():
    """`rescuemeta freq` with its defaults (REML, z-test) and --studies needs neither scipy nor hypothesis: the
    normal distribution comes from the standard library and tau^2 from a bisection (scipy costs about 0.5 s of
    a 1.1 s command; hypothesis, which pandera imports whenever it is installed, 0.2 s). Nor does `check`: its
    GLMM uses numpy alone (freq._box_newton instead of scipy.optimize's L-BFGS-B). HKSJ (Student's t)
    still loads scipy.special, and a check that it does keeps this test honest."""
    code = ("import sys; from rescuemeta.cli import app\n"
            "try:\n    app(sys.argv[1:], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in ('scipy', 'hypothesis')}))")
    for args, expect in ((["freq", "--data", str(BCG), "--studies"], "[]"),
                         (["check", "--data", str(ROOT / "data" / "studies.csv"), "--abstract",
                           str(ROOT / "data" / "abstract_estimates.csv"), "--json"], "[]"),
                         (["freq", "--data", str(BCG), "--hksj"], "['scipy']")):
        p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip().splitlines()[-1] == expect, (args, p.stdout[-300:])


def test_help_is_readable_at_80_columns():
    """Every command's --help in an 80-column terminal: nothing cut (no ellipsis), no raw types, no line over 80.
    (One new process with COLUMNS=80 renders all of them: rich reads the width as each help page is drawn.)"""
    cmds = ("freq", "fit", "prob", "analyze", "sensitivity", "reanalyze", "check", "influence", "cumulative", "bias",
            "loo")
    code = ("import contextlib, io, json, sys\nfrom rescuemeta.cli import app\npages = {}\n"
            "for cmd in sys.argv[1:]:\n    buf = io.StringIO()\n    with contextlib.redirect_stdout(buf):\n"
            "        code = app([cmd, '--help'], standalone_mode=False)\n    pages[cmd] = [code, buf.getvalue()]\n"
            "print(json.dumps(pages))")
    p = subprocess.run([sys.executable, "-c", code, *cmds], capture_output=True, text=True,
                       env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    pages = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(pages) == set(cmds)
    for cmd, (code, page) in pages.items():
        assert code in (0, None) and "Usage:" in page, cmd
        assert "…" not in page and "<bool>" not in page, cmd
        assert max(len(line) for line in page.splitlines()) <= 80, cmd
    flat = " ".join(pages["fit"][1].split())
    assert "turner(all_cause_mortality," in flat and "Default per model: contrast halfnormal(0.5)" in flat
    assert np.all([s in pages["fit"][1] for s in ("[default: 4]", "[default: nutpie]")])


def test_a_bad_description_is_an_input_error_naming_file_and_key(tmp_path):
    csv = tmp_path / "trials.csv"
    csv.write_bytes(BCG.read_bytes())
    (tmp_path / "trials.toml").write_text('[outcomes.trials]\nbetter = "more"\n')
    r = _run("freq", "--data", csv)
    assert r.exit_code == 2 and "trials.toml" in r.stderr and "outcomes.trials.better" in r.stderr
    (tmp_path / "trials.toml").write_text('[dataset]\ncolour = "blue"\n')
    r = _run("freq", "--data", csv)
    assert r.exit_code == 2 and "unknown key 'dataset.colour'" in r.stderr


def test_a_description_sets_words_and_the_direction_of_benefit(tmp_path):
    csv = tmp_path / "trials.csv"
    csv.write_bytes(BCG.read_bytes())
    (tmp_path / "trials.toml").write_text(
        '[dataset]\ntitle = "BCG vaccine against tuberculosis"\ntreatment = "BCG"\ncontrol = "no vaccine"\n'
        'evidence_note = "13 trials (metafor dat.bcg)."\n[outcomes.trials]\nlabel = "Tuberculosis cases"\n'
        'better = "lower"\nturner = "infection"\n')
    t = load_studies(csv)
    assert t.description.label("trials") == "Tuberculosis cases" and t.description.treatment == "BCG"
    r = _run("fit", "--data", csv, "--model", "normal", "--measure", "RR", "--json")
    s = json.loads(r.stdout)
    assert s["evidence_note"] == "13 trials (metafor dat.bcg)." and s["benefit"] == "lower"
    r = _run("prob", "--data", csv, "--model", "normal", "--measure", "RR", "NNT < 100", "--json")
    row = json.loads(r.stdout)[0]
    assert row["benefit"] == "fewer events"  # stated, not assumed
    r = _run("prob", "--data", BCG, "--model", "normal", "--measure", "RR", "NNT < 100", "--json")
    assert "assumed" in json.loads(r.stdout)[0]["benefit"]  # no description: said to be an assumption


def test_turner_matched_needs_an_outcome_type_from_the_description():
    from rescuemeta import sensitivity as sens

    spec = sens.SensitivitySpec(path="t", outcomes=["*"], models=["normal"], tau_priors=["turner(matched)",
                                "halfnormal(0.5)"], inclusion=["dedup"])
    table = load_studies(BCG)
    with pytest.raises(Exception, match="no Turner outcome type"):
        sens.grid(spec, table)
    assert [c["tau_prior"] for c in sens.grid(spec, table, unmatched="skip")] == ["halfnormal(0.5)"]
    rescue = sens.grid(spec, load_studies(ROOT / "data" / "studies.csv"))
    assert "turner(all_cause_mortality, nonpharma_vs_placebo)" in {c["tau_prior"] for c in rescue
                                                                   if c["outcome"] == "mortality"}


def test_version_literal_is_the_installed_metadata():
    """`rescuemeta --version` reads a literal (hatchling builds the metadata from it): the two must agree."""
    from importlib.metadata import version

    from rescuemeta._version import __version__

    assert __version__ == version("rescuemeta")
