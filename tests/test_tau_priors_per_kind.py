"""Heterogeneity priors per model kind (issue 14, item 2): tau is the SD of log ratios in the contrast and normal
models but of logit event rates in the proportion model, so each kind has its own default prior and grid, the
README gives the reasons, and the Turner et al. (2015) priors (log odds ratios) are refused for proportions
wherever they would reach them: the fit, the command line, the primary spec and the sensitivity spec."""

import math
import re

import numpy as np
import pytest
from scipy import stats
from typer.testing import CliRunner

from rescuemeta import kinds
from rescuemeta import sensitivity as sens
from rescuemeta.cli import app
from rescuemeta.errors import InputError
from rescuemeta.fit import FitConfig
from rescuemeta.spec import describe_tau_priors, load_primary

from conftest import ROOT

DATA = str(ROOT / "data" / "studies.csv")
runner = CliRunner()


def test_each_kind_has_its_default():
    assert FitConfig("mortality", model="contrast").tau_prior == "halfnormal(0.5)"
    assert FitConfig("mortality", model="normal").tau_prior == "halfnormal(0.5)"
    assert FitConfig("mortality", model="proportion").tau_prior == "halfnormal(1)"
    # a prior given explicitly is kept
    assert FitConfig("mortality", model="proportion", tau_prior="halfcauchy(1)").tau_prior == "halfcauchy(1)"


def test_proportion_default_is_wider_than_the_log_or_default():
    """The stated reason: the unit-information SD of a logit rate, 1/sqrt(p(1-p)), is >= 2 (the log OR's), so a
    scale of UISD/4 is >= 0.5; the README's numbers (2.5 at 20%, 3.3 at 10%, 4.6 at 5%; the 10%-62% span of study
    rates around 30% at the median tau of half-normal(1)) are recomputed here."""
    uisd = {p: 1 / math.sqrt(p * (1 - p)) for p in (0.5, 0.2, 0.1, 0.05)}
    assert [round(v, 1) for v in uisd.values()] == [2.0, 2.5, 3.3, 4.6]
    median_tau = stats.halfnorm(scale=1).median()
    assert median_tau == pytest.approx(0.674, abs=1e-3)
    lo, hi = (stats.logistic.cdf(math.log(0.3 / 0.7) + s * 1.959964 * median_tau) for s in (-1, 1))
    assert (round(lo, 2), round(hi, 2)) == (0.10, 0.62)
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Priors and their defaults"):readme.index("## Correctness")]
    for mk in kinds.MODEL_KINDS.values():
        assert f"`{mk.default_tau_prior}`" in section and mk.name in section
    for number in ("2.5 at 20%", "3.3 at 10%", "4.6 at 5%", "10%-62%"):
        assert number in section


@pytest.mark.parametrize("spec", ["turner(general)", "turner(all_cause_mortality, pharma_vs_placebo)",
                                  "Turner( general )"])
def test_turner_refused_for_proportions(spec):
    cfg = FitConfig("mortality", model="proportion", tau_prior=spec)
    with pytest.raises(InputError) as e:
        cfg.validate()
    msg = e.value.message
    assert "does not apply to the proportion model" in msg and "logit event rates" in msg
    assert "halfnormal(1)" in msg  # says what to use instead
    FitConfig("mortality", model="contrast", tau_prior=spec).validate()  # fine for log odds ratios


def test_cli_refuses_turner_for_proportions():
    r = runner.invoke(app, ["fit", "--data", DATA, "--outcome", "mortality", "--model", "proportion",
                            "--tau-prior", "turner(general)"])
    assert r.exit_code == 2 and "does not apply to the proportion model" in r.stderr
    assert "Traceback" not in r.output
    help_text = " ".join(runner.invoke(app, ["fit", "--help"], terminal_width=200).output.split())
    assert "proportion halfnormal(1)" in help_text and "contrast halfnormal(0.5)" in help_text


def _primary(tmp_path, text):
    p = tmp_path / "primary.toml"
    p.write_text(text)
    return load_primary(p)


def test_primary_spec_priors_per_kind(tmp_path):
    # nothing given: each kind's default
    spec = _primary(tmp_path, 'models = ["contrast", "proportion"]\n')
    cfgs = {c.model: c.tau_prior for c in spec.configs(["mortality"])}
    assert cfgs == {"contrast": "halfnormal(0.5)", "proportion": "halfnormal(1)"}
    assert spec.describe_tau_prior() == "halfnormal(0.5) (contrast); halfnormal(1) (proportion)"
    # one prior for every kind
    spec = _primary(tmp_path, 'tau_prior = "halfcauchy(0.5)"\n')
    assert {c.tau_prior for c in spec.configs(["mortality"])} == {"halfcauchy(0.5)"}
    assert spec.describe_tau_prior() == "halfcauchy(0.5)"
    # a table: named kinds take theirs, the others their default; an outcome's override per kind
    spec = _primary(tmp_path, 'tau_prior = { contrast = "turner(general)" }\n'
                              '[outcome.sich.tau_prior]\nproportion = "halfnormal(2)"\n')
    got = {(c.outcome, c.model): c.tau_prior for c in spec.configs(["mortality", "sich"])}
    assert got == {("mortality", "contrast"): "turner(general)", ("mortality", "proportion"): "halfnormal(1)",
                   ("sich", "contrast"): "turner(general)", ("sich", "proportion"): "halfnormal(2)"}


@pytest.mark.parametrize("text, needle", [
    ('tau_prior = "turner(general)"', "key 'tau_prior': tau prior 'turner(general)' does not apply to the proportion"),
    ('tau_prior = "turner(general)"', "Give each model its own: [tau_prior] contrast = ..., proportion = ..."),
    ('tau_prior = { proportion = "turner(general)" }', "key 'tau_prior.proportion'"),
    ('tau_prior = { glmm = "halfnormal(1)" }', "'glmm' is not a model kind"),
    ('tau_prior = 3', "key 'tau_prior' must be a str or table"),
    ('tau_prior = { contrast = "halfnormal(-1)" }', "key 'tau_prior.contrast'"),
    ('[outcome.mortality]\ntau_prior = "turner(general)"', "key 'outcome.mortality.tau_prior'"),
    ('sensitivity_tau_priors = ["halfnormal(1)", "turner(matched)"]', "key 'sensitivity_tau_priors[1]'"),
    ('sensitivity_tau_priors = { proportion = [] }', "'sensitivity_tau_priors.proportion' must be a non-empty list"),
    ('sensitivity_tau_priors = { proportion = ["turner(matched, nonsense)"] }', "sensitivity_tau_priors.proportion[0]"),
])
def test_primary_spec_refusals(tmp_path, text, needle):
    with pytest.raises(InputError) as e:
        _primary(tmp_path, 'models = ["contrast", "proportion"]\n' + text + "\n")
    assert needle in e.value.message and "primary.toml" in str(e.value)


def test_turner_table_entry_for_contrast_only_is_fine(tmp_path):
    spec = _primary(tmp_path, 'models = ["proportion"]\ntau_prior = "turner(general)"\n'.replace(
        '"turner(general)"', '{ contrast = "turner(general)" }'))
    assert [c.tau_prior for c in spec.configs(["mortality"])] == ["halfnormal(1)"]


def test_sensitivity_grid_per_kind(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('models = ["contrast", "proportion"]\n[tau_priors]\ncontrast = ["halfnormal(0.5)", "turner(matched)"]\n'
                 'proportion = ["halfnormal(1)", "halfnormal(2)"]\n')
    spec = sens.load_sensitivity(p)
    from rescuemeta.data import load_studies

    rows = sens.grid(spec, load_studies(DATA), only_outcome="mortality")
    got = {(r["model"], r["tau_prior"]) for r in rows}
    assert got == {("contrast", "halfnormal(0.5)"), ("contrast", "turner(all_cause_mortality, nonpharma_vs_placebo)"),
                   ("proportion", "halfnormal(1)"), ("proportion", "halfnormal(2)")}
    # a kind the table leaves out takes its default grid
    p.write_text('models = ["contrast", "proportion"]\n[tau_priors]\ncontrast = ["halfnormal(0.5)"]\n')
    spec = sens.load_sensitivity(p)
    assert spec.tau_priors_for("proportion") == list(kinds.MODEL_KINDS["proportion"].sensitivity_tau_priors)
    # the shipped specs give proportions no Turner prior and the report names each kind's grid
    for path in ("models/sensitivity.toml", "models/primary.toml"):
        text = (ROOT / path).read_text()
        assert re.search(r"proportion = \[[^\]]*turner", text) is None
    spec = load_primary(ROOT / "models" / "primary.toml")
    assert describe_tau_priors(spec.sensitivity_tau_priors, ["contrast", "proportion"], many=True).count("(") >= 2


def test_every_kind_default_parses_and_is_accepted():
    for mk in kinds.MODEL_KINDS.values():
        mk.check_tau_prior(mk.default_tau_prior)
        for tp in mk.sensitivity_tau_priors:
            if not mk.turner_priors:
                assert "turner" not in tp
        assert np.isfinite(FitConfig("mortality", model=mk.name).priors()["tau"].logpdf(np.array([0.5]))).all()
