"""Every outcome of data/studies.csv fits under the convergence guard (contrast model where control arms
exist, proportion model on stent arms), and the posteriors land where the likelihood says."""

import numpy as np
import pytest
from scipy.special import logit

from rescuemeta.data import load_studies, select
from rescuemeta.errors import InputError
from rescuemeta.freq import meta_analyze
from rescuemeta.models import ModelData
from rescuemeta.priors import parse
from rescuemeta.sampling import default_sampler

TABLE = load_studies("data/studies.csv")
SAMPLER = default_sampler()  # shares compiled models with the other test modules
EFFECT = parse("normal(0, 4)", "effect")
BASELINE = parse("normal(0, 10)", "effect")


@pytest.mark.parametrize("outcome", TABLE.outcomes)
def test_proportion_model_fits_every_outcome(outcome):
    sel = select(TABLE, outcome, arms="one")
    ai, n1i, _, _ = sel.counts()
    idata, diag = SAMPLER.sample(ModelData("proportion", {"ai": ai.astype(int), "n1i": n1i.astype(int)}),
                                 parse("halfnormal(0.5)"), EFFECT, draws=1000, seed=2)
    assert diag.ok and diag.divergences == 0
    # the pooled logit sits between the smallest and largest study logits, near the ML (GLMM) estimate
    glmm = meta_analyze("PLO", "GLMM", ai, n1i)
    med = float(np.median(idata.posterior["mu"].values))
    assert abs(med - glmm.estimate) < 0.25, (med, glmm.estimate)
    assert np.all(idata.posterior["theta"].values.shape[-1] == sel.k)


@pytest.mark.parametrize("outcome", TABLE.outcomes)
def test_contrast_model_fits_where_control_arms_exist(outcome):
    try:
        sel = select(TABLE, outcome, arms="two")
    except InputError:
        pytest.skip(f"{outcome}: no control arms (the data has none; nothing to fit)")
    ai, n1i, ci, n2i = sel.counts()
    md = ModelData("contrast", {"ai": ai.astype(int), "n1i": n1i.astype(int), "ci": ci.astype(int),
                                "n2i": n2i.astype(int)})
    idata, diag = SAMPLER.sample(md, parse("halfnormal(0.5)"), EFFECT, BASELINE, draws=1000, seed=2)
    assert diag.ok and diag.divergences == 0
    # with a control arm per study, the posterior of alpha_i tracks the observed control logits
    alpha = np.median(idata.posterior["alpha"].values, axis=(0, 1))
    obs = logit((ci + 0.5) / (n2i + 1))
    assert np.all(np.abs(alpha - obs) < 1.0)
    mh = meta_analyze("OR", "MH", ai, n1i, ci, n2i)
    assert abs(float(np.median(idata.posterior["mu"].values)) - mh.estimate) < 0.5


def test_primary_grid_prior_that_used_to_fail_converges_with_margin():
    """The primary analysis' sensitivity grid had mortality / contrast / halfnormal(1) failing its guard (issue 14);
    with the standardised parameterisation (session 4) it passes on the first attempt, with ESS well above the 400
    required (the graph the other tests here compiled: a half-normal prior, another scale)."""
    tau_prior = "halfnormal(1)"
    sel = select(TABLE, "mortality", arms="two")
    ai, n1i, ci, n2i = sel.counts()
    md = ModelData("contrast", {"ai": ai.astype(int), "n1i": n1i.astype(int), "ci": ci.astype(int),
                                "n2i": n2i.astype(int)})
    _, diag = SAMPLER.sample(md, parse(tau_prior), EFFECT, BASELINE, draws=1000, seed=1)
    assert diag.ok and diag.attempts == 1 and diag.divergences == 0
    assert min(diag.ess_bulk_min, diag.ess_tail_min) > 2 * diag.ess_required  # off the guard's edge
