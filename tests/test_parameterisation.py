"""The sampler's parameterisation (models._pooled_effect, _study_effects, _baselines) is an exact change of
variables: at any point, the log density PyMC evaluates on (tau, u, z, b) equals the model's log density on
(mu, theta, alpha, tau), written out here with scipy, plus the log-determinant of the map's Jacobian, taken
here by finite differences. A wrong Jacobian term or a wrong prior would show as a mismatch."""

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

from rescuemeta.models import ModelData, build_model
from rescuemeta.priors import parse

TAU = parse("halfnormal(0.5)")
MU = parse("normal(0.3, 2)", "effect")
MU_T = parse("student_t(4, 0, 1.5)", "effect")
BASE = parse("normal(-1, 3)", "effect")
# PyTensor's Python implementations: these identities are checked at a few points, where compiling every op to C
# in an empty compile directory cost 70 s of the suite (FAST_COMPILE: the same float64 arithmetic, no C compiler)
FAST = "FAST_COMPILE"

DATA = {
    # small counts, a zero cell, and n = 1e6 per arm (where the approximation is centred on the data)
    "contrast": ModelData("contrast", {"ai": np.array([3, 0, 1200]), "n1i": np.array([20, 15, 1_000_000]),
                                       "ci": np.array([7, 2, 1500]), "n2i": np.array([22, 14, 1_000_000])}),
    "proportion": ModelData("proportion", {"ai": np.array([3, 0, 1200]), "n1i": np.array([20, 15, 1_000_000])}),
    "normal": ModelData("normal", {"y": np.array([-0.4, 0.1, -0.2]), "s": np.array([0.6, 0.9, 0.03])}),
}


def _reference_logp(kind, mu_prior, mu, tau, theta, alpha, data):
    a = data.arrays
    lp = mu_prior.logpdf(np.array(mu)) + stats.halfnorm.logpdf(tau, scale=0.5)
    lp += stats.norm.logpdf(theta, mu, tau).sum()
    if kind == "contrast":
        lp += stats.norm.logpdf(alpha, -1, 3).sum()
        lp += stats.binom.logpmf(a["ci"], a["n2i"], expit(alpha)).sum()
        lp += stats.binom.logpmf(a["ai"], a["n1i"], expit(alpha + theta)).sum()
    elif kind == "proportion":
        lp += stats.binom.logpmf(a["ai"], a["n1i"], expit(theta)).sum()
    else:
        lp += stats.norm.logpdf(a["y"], theta, a["s"]).sum()
    return float(np.squeeze(lp))


@pytest.mark.parametrize("kind", ["contrast", "proportion", "normal"])
@pytest.mark.parametrize("mu_prior", [MU, MU_T], ids=["normal_mu", "student_t_mu"])
def test_change_of_variables_is_exact(kind, mu_prior):
    data = DATA[kind]
    model = build_model(data, TAU, mu_prior, BASE if kind == "contrast" else None)
    logp = model.compile_logp(jacobian=False, mode=FAST)  # tau's log transform is not part of this identity
    # (in the graph shared by the tau families, tau = exp(tau_log__) carries its log-Jacobian as a potential)
    tau_jacobian = "tau_prior" in {p.name for p in model.potentials}
    free = [v.name for v in model.value_vars]
    graphs = model.replace_rvs_by_values([model["mu"], model["theta"]]
                                         + ([model["alpha"]] if kind == "contrast" else []))
    outs = model.compile_fn(graphs, inputs=model.value_vars, on_unused_input="ignore", mode=FAST)
    rng = np.random.default_rng(3)
    k = data.k
    for tau in (0.002, 0.05, 0.4, 2.0):  # across the scale of the studies' standard errors (0.03 to 0.9)
        point = {"tau_log__": np.log(tau), "u": rng.normal(), "z": rng.normal(size=k)}
        if "b" in free:
            point["b"] = rng.normal(size=k)

        def transform(vec, point=point):
            p = dict(point, u=vec[0], z=vec[1:1 + k])
            if "b" in free:
                p["b"] = vec[1 + k:]
            return np.concatenate([np.atleast_1d(x) for x in outs(p)])

        x0 = np.concatenate([[point["u"]], point["z"]] + ([point["b"]] if "b" in free else []))
        mu, theta, *rest = outs(point)
        alpha = rest[0] if rest else None
        h = 1e-6
        jac = np.column_stack([(transform(x0 + h * e) - transform(x0 - h * e)) / (2 * h) for e in np.eye(len(x0))])
        sign, logdet = np.linalg.slogdet(jac)
        assert sign > 0
        ours = float(logp(point))
        ref = _reference_logp(kind, mu_prior, float(mu), tau, theta, alpha, data)
        ref += np.log(tau) if tau_jacobian else 0.0
        assert ours == pytest.approx(ref + logdet, abs=1e-5), (tau, ours, ref, logdet)


def test_weak_data_reduce_to_the_non_centred_form():
    """With no information in a study (precision 0, as for padded studies) theta_i = mu + tau z_i exactly."""
    data = ModelData("normal", {"y": np.array([0.0, 0.0]), "s": np.array([1e12, 1e12])})
    model = build_model(data, TAU, MU)
    f = model.compile_fn(model.replace_rvs_by_values([model["mu"], model["theta"]]), inputs=model.value_vars,
                         on_unused_input="ignore", mode=FAST)
    z = np.array([0.7, -1.2])
    mu, theta = f({"tau_log__": np.log(0.3), "u": 0.5, "z": z})
    # mu given tau is its prior N(0.3, 2^2) standardised: mu = 0.3 + 2 u
    assert float(mu) == pytest.approx(0.3 + 2 * 0.5, rel=1e-9)
    np.testing.assert_allclose(theta, float(mu) + 0.3 * z, rtol=1e-9)


@pytest.mark.parametrize("sigma", [0.003, 0.3, 1.5])
def test_hierarchical_baselines_change_of_variables_is_exact(sigma):
    """Hierarchical baselines (Warn et al. 2002): alpha_i ~ N(m, s^2), m ~ the baseline prior, s ~ half-normal(1),
    with alpha_i standardised by its conditional posterior under the normal approximation (models._baselines).
    The log density on (u, z, b) equals the model's on (mu, theta, alpha) plus the log-Jacobian, at a small, a
    moderate and a large s, for weak and very strong (n = 1e6) control arms."""
    data = ModelData("contrast", DATA["contrast"].arrays, hierarchical_baselines=True)
    a = data.arrays
    model = build_model(data, TAU, MU, BASE)
    assert {v.name for v in model.value_vars} == {"tau_log__", "u", "z", "b", "alpha_mu", "alpha_sigma_log__"}
    logp = model.compile_logp(jacobian=False, mode=FAST)
    tau_jacobian = "tau_prior" in {p.name for p in model.potentials}  # tau = exp(tau_log__): see above
    outs = model.compile_fn(model.replace_rvs_by_values([model["mu"], model["theta"], model["alpha"]]),
                            inputs=model.value_vars, on_unused_input="ignore", mode=FAST)
    rng = np.random.default_rng(5)
    k = data.k
    for tau in (0.01, 0.4, 2.0):
        point = {"tau_log__": np.log(tau), "u": rng.normal(), "z": rng.normal(size=k), "b": rng.normal(size=k),
                 "alpha_mu": rng.normal(-1, 0.5), "alpha_sigma_log__": np.log(sigma)}

        def transform(vec, point=point):
            return np.concatenate([np.atleast_1d(x) for x in outs(dict(point, u=vec[0], z=vec[1:1 + k],
                                                                       b=vec[1 + k:]))])

        x0 = np.concatenate([[point["u"]], point["z"], point["b"]])
        mu, theta, alpha = outs(point)
        h = 1e-6
        jac = np.column_stack([(transform(x0 + h * e) - transform(x0 - h * e)) / (2 * h) for e in np.eye(len(x0))])
        sign, logdet = np.linalg.slogdet(jac)
        assert sign > 0
        m = point["alpha_mu"]
        ref = (MU.logpdf(np.array(float(mu))) + stats.halfnorm.logpdf(tau, scale=0.5)
               + stats.norm.logpdf(theta, mu, tau).sum() + stats.norm.logpdf(alpha, m, sigma).sum()
               + stats.norm.logpdf(m, -1, 3) + stats.halfnorm.logpdf(sigma, scale=1.0)
               + stats.binom.logpmf(a["ci"], a["n2i"], expit(alpha)).sum()
               + stats.binom.logpmf(a["ai"], a["n1i"], expit(alpha + theta)).sum())
        ref = float(np.squeeze(ref)) + (np.log(tau) if tau_jacobian else 0.0)
        assert float(logp(point)) == pytest.approx(ref + logdet, abs=1e-5), (tau, sigma)


def test_hierarchical_baselines_without_data_are_non_centred():
    """A study with no control-arm information (a padded study: base_prec 0) has alpha_i = m + s b_i exactly."""
    from rescuemeta.models import observed_data

    data = ModelData("contrast", {"ai": np.array([3]), "n1i": np.array([20]), "ci": np.array([7]),
                                  "n2i": np.array([22])}, hierarchical_baselines=True)
    obs = observed_data(data, size=3)
    assert obs["base_prec"][1:].tolist() == [0.0, 0.0] and obs["base_prec"][0] > 0
    model = build_model(data, TAU, MU, BASE, size=3)
    f = model.compile_fn(model.replace_rvs_by_values([model["alpha"]]), inputs=model.value_vars,
                         on_unused_input="ignore", mode=FAST)
    b = np.array([0.3, 0.7, -1.2])
    (alpha,) = f({"tau_log__": np.log(0.3), "u": 0.5, "z": np.zeros(3), "b": b, "alpha_mu": -0.8,
                  "alpha_sigma_log__": np.log(0.6)})
    np.testing.assert_allclose(alpha[1:], -0.8 + 0.6 * b[1:], rtol=1e-12)
