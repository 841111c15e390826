"""The hand-written log density of the shared binomial graph (rescuemeta.native) against the PyMC model it replaces:
log density (with every normalising constant), gradient and expanded variables equal PyTensor's at random points,
for every tau family (uniform through PyMC's interval transform), both location-scale families of the effect,
baseline and coefficient priors, with moderators, a reported row, zero cells and padded studies, and single-arm data;
the gradient also against finite differences; the same numbers from numba's disk cache in a new process; and the
path chosen only where it applies."""

import json
import os
import subprocess
import sys

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from rescuemeta import native
from rescuemeta.models import SHARED_TAU_FAMILIES, ModelData, build_model, observed_data, prior_data, structure_key
from rescuemeta.priors import parse

SIZE, N_COEF = 16, 4
# one prior of every shared tau family (turner(...) is the log-normal on tau^2, ``lognormal2``)
TAU_PRIORS = ["halfnormal(0.5)", "halfcauchy(0.7)", "halft(3, 0.5)", "exponential(2)", "lognormal(-1, 0.8)",
              "invgamma(1.5, 0.3)", "turner(all_cause_mortality, nonpharma_vs_placebo)"]
# effect, baseline and coefficient priors of each family
LOCATION = {"normal": ("normal(0.1, 2)", "normal(-1, 5)", "normal(0, 1)"),
            "student_t": ("student_t(4, 0.2, 2)", "student_t(5, -1, 3)", "student_t(3, 0, 1.5)")}


def _datasets():
    rng = np.random.default_rng(11)
    k = 5
    n1, n2 = rng.integers(5, 200, k), rng.integers(5, 200, k)
    ai, ci = rng.binomial(n1, 0.3), rng.binomial(n2, 0.4)
    ai[0] = 0  # a zero cell
    arr = {"ai": ai, "n1i": n1, "ci": ci, "n2i": n2, "est_y": np.zeros(k), "est_s": np.ones(k), "est_mask": np.zeros(k)}
    for name in ("ai", "n1i", "ci", "n2i"):  # row 2 analysed by its reported log OR
        arr[name][2] = 0
    arr["est_y"][2], arr["est_s"][2], arr["est_mask"][2] = 0.3, 0.4, 1.0
    X = np.column_stack([np.ones(k), rng.normal(size=k), rng.normal(size=k)])  # two moderators, one padded column
    n = rng.integers(10, 90, 7)
    return [ModelData("contrast", arr, X=X), ModelData("proportion", {"ai": rng.binomial(n, 0.2), "n1i": n})]


def _values(md, tau, families):
    eff, base, coef = (parse(s, "effect") for s in LOCATION[families])
    return {**prior_data(tau, eff, base, False, coef),
            **observed_data(md, SIZE, shared_binomial=True, n_coef=N_COEF)}


UNIFORM_PRIORS = ["uniform(0, 2)", "uniform(0.05, 3.5)"]  # their own graph: PyMC's interval transform on tau


def _reference(fam, tau_spec):
    """PyTensor's log density, gradient and deterministics of the shared binomial graph with the effect, baseline and
    coefficient priors of one family (FAST_COMPILE: no C or numba compilation), and the native model."""
    md = _datasets()[0]
    tau = parse(tau_spec)
    eff, base, coef = (parse(s, "effect") for s in LOCATION[fam])
    m = build_model(md, tau, eff, base, size=SIZE, shared_binomial=True, coef_prior=coef, n_coef=N_COEF)
    vv = m.value_vars
    first = "tau_interval__" if tau.family == "uniform" else "tau_log__"
    assert [v.name for v in vv] == [first, "slopes", "u", "z", "b"]
    lp = m.logp()
    fn = pytensor.function(vv, [lp, *pt.grad(lp, vv)], mode="FAST_COMPILE")
    dets = pytensor.function(vv, m.replace_rvs_by_values([m[n] for n in ("tau", "mu", "beta", "theta", "alpha")]),
                             mode="FAST_COMPILE", on_unused_input="ignore")
    key = structure_key("contrast", SIZE, tau, eff, base, shared_binomial=True, n_coef=N_COEF, coef_prior=coef)
    assert native.supports(key)
    nat = native.compile_native(key)
    assert nat.shape_info[0][0] == first
    return fam, m, fn, dets, nat


@pytest.fixture(scope="module", params=sorted(LOCATION))
def reference(request):
    return _reference(request.param, TAU_PRIORS[0])


@pytest.fixture(scope="module", params=sorted(LOCATION))
def reference_uniform(request):
    return _reference(request.param, UNIFORM_PRIORS[0])


def _split(x):
    ns = N_COEF - 1
    return [x[0], x[1:1 + ns], x[1 + ns], x[2 + ns:2 + ns + SIZE], x[2 + ns + SIZE:]]


def test_every_shared_tau_family_is_covered():
    assert sorted({parse(s).family for s in TAU_PRIORS}) == sorted(SHARED_TAU_FAMILIES)


@pytest.mark.parametrize("tau_spec", TAU_PRIORS)
def test_log_density_gradient_and_expansion_equal_pytensors(reference, tau_spec):
    _compare(reference, tau_spec)


@pytest.mark.parametrize("tau_spec", UNIFORM_PRIORS)
def test_uniform_tau_prior_equals_pytensors_interval_transform(reference_uniform, tau_spec):
    _compare(reference_uniform, tau_spec)


def _compare(reference, tau_spec):
    fam, m, fn, dets, nat = reference
    rng = np.random.default_rng(hash(tau_spec) % 2**32)
    for md in _datasets():
        vals = _values(md, parse(tau_spec), fam)
        for name, value in vals.items():
            m[name].set_value(np.asarray(value, dtype=m[name].dtype))
        model = nat.with_data(**vals)
        for _ in range(3):
            x = rng.normal(size=model.n_dim) * 0.8
            ref = fn(*_split(x))
            ref_grad = np.concatenate([np.atleast_1d(g) for g in ref[1:]])
            logp, grad = model.logp_func(x)
            assert logp == pytest.approx(float(ref[0]), rel=1e-11, abs=1e-9)
            np.testing.assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-9)
            expanded = model.expand_func(x)
            np.testing.assert_array_equal(expanded[:model.n_dim], x)
            ref_det = np.concatenate([np.atleast_1d(a) for a in dets(*_split(x))])
            np.testing.assert_allclose(expanded[model.n_dim:], ref_det, rtol=1e-12, atol=1e-12)


def test_gradient_matches_finite_differences():
    """Independently of PyTensor: central differences of the native log density at points with large and small tau."""
    md = _datasets()[0]
    key = ("binomial", SIZE, "shared", "student_t", "student_t", "coef", N_COEF, "student_t")
    rng = np.random.default_rng(3)
    for tau_spec in TAU_PRIORS + UNIFORM_PRIORS:
        graph = "uniform" if tau_spec.startswith("uniform") else "shared"
        model = native.compile_native(key[:2] + (graph,) + key[3:]).with_data(
            **_values(md, parse(tau_spec), "student_t"))
        for scale_tau in (-2.5, 0.0, 1.0):
            x = rng.normal(size=model.n_dim) * 0.6
            x[0] = scale_tau
            _, grad = model.logp_func(x)
            h = 1e-6
            fd = np.array([(model.logp_func(x + h * e)[0] - model.logp_func(x - h * e)[0]) / (2 * h)
                           for e in np.eye(model.n_dim)])
            np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5)


def test_the_c_callbacks_equal_the_python_entry():
    """What nutpie calls (the C callbacks through the packed ``user_data``) returns what ``logp_func`` returns; a
    vector of the wrong length is refused with nutpie's code -1."""
    from rescuemeta.evidence import log_density_function

    md = _datasets()[0]
    key = ("binomial", SIZE, "shared", "normal", "normal", "coef", N_COEF, "normal")
    model = native.compile_native(key).with_data(**_values(md, parse("halfcauchy(0.5)"), "normal"))
    x = np.linspace(-0.5, 0.5, model.n_dim)
    assert log_density_function(model)(x) == model.logp_func(x)[0]
    import ctypes

    dbl = ctypes.POINTER(ctypes.c_double)
    g, lp = np.zeros(model.n_dim + 1), np.zeros(())
    x1 = np.zeros(model.n_dim + 1)
    rc = model.compiled_logp_func.ctypes(model.n_dim + 1, x1.ctypes.data_as(dbl), g.ctypes.data_as(dbl),
                                         lp.ctypes.data_as(dbl), model.user_data.ctypes.data_as(ctypes.c_void_p))
    assert rc == -1


_CHILD = """
import json, sys
import numpy as np
from rescuemeta import native
d = np.array(json.loads(sys.argv[1]))
x = np.linspace(-0.7, 0.6, 2 + int(d[1]) + 2 * int(d[0]))
g = np.zeros_like(x)
logp = native.logp_grad(x, g, d)
print(json.dumps({"logp": logp.hex(), "grad": [v.hex() for v in g], "hits": native.logp_grad.stats.cache_hits.get(
    native.logp_grad.signatures[0], 0) if native.logp_grad.signatures else 0}))
"""


def test_same_numbers_from_numbas_disk_cache(tmp_path):
    """Reproducibility: a process that compiles the code (empty cache) and one that loads it from disk give the same
    log density and gradient, bit for bit, as this process."""
    md = _datasets()[1]
    key = ("binomial", SIZE, "shared", "normal", "normal", "coef", N_COEF, "normal")
    model = native.compile_native(key).with_data(**_values(md, parse("halfnormal(1)"), "normal"))
    d = np.asarray(model.user_data)
    x = np.linspace(-0.7, 0.6, model.n_dim)
    logp, grad = model.logp_func(x)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = [json.loads(subprocess.run([sys.executable, "-c", _CHILD, json.dumps(d.tolist())], env=env, check=True,
                                     capture_output=True, text=True).stdout) for _ in range(2)]
    assert out[1]["hits"] >= 1  # the second process loaded the code
    for o in out:
        assert o["logp"] == logp.hex() and o["grad"] == [v.hex() for v in grad]


def test_native_only_where_it_applies(monkeypatch):
    tau, eff, base = parse("halfnormal(0.5)"), parse("normal(0, 4)", "effect"), parse("normal(0, 10)", "effect")
    coef = parse("normal(0, 1)", "effect")
    shared = structure_key("contrast", 16, tau, eff, base, shared_binomial=True, n_coef=4, coef_prior=coef)
    assert native.supports(shared)
    assert native.supports(structure_key("contrast", 16, parse("uniform(0, 2)"), eff, base, shared_binomial=True,
                                         n_coef=4, coef_prior=coef))  # uniform: a structure of its own, also native
    assert not native.supports(structure_key("normal", 16, tau, eff, None))
    assert not native.supports(structure_key("contrast", 16, tau, eff, base, hierarchical_baselines=True))
    assert not native.supports(structure_key("contrast", 16, tau, eff, base, extra=("bias",)))
    monkeypatch.setenv("RESCUEMETA_NATIVE", "0")
    assert not native.supports(shared)


@pytest.mark.slow
def test_sampler_uses_it_and_recovers_the_pytensor_posterior():
    """A fit through the Sampler runs on the native model; its posterior of mu and tau agrees with pm.sample's on the
    PyTensor graph of the same model within Monte Carlo error (4 standard errors of the difference)."""
    import arviz as az

    from rescuemeta.sampling import Sampler

    md = _datasets()[0]
    md = ModelData("contrast", md.arrays)
    tau, eff, base = parse("halfnormal(0.5)"), parse("normal(0, 2)", "effect"), parse("normal(0, 10)", "effect")
    s = Sampler()
    idata, diag = s.sample(md, tau, eff, base, draws=1000, seed=3)
    (compiled,) = s._cache.values()
    assert type(compiled).__name__ == "_Native" and diag.ok
    ref, ref_diag = Sampler(backend="pymc").sample(md, tau, eff, base, draws=1000, seed=3)
    assert ref_diag.ok
    for v in ("mu", "tau"):
        a, b = idata.posterior[v], ref.posterior[v]
        se = np.hypot(float(az.mcse(a.to_dataset(), method="mean")[v]), float(az.mcse(b.to_dataset(), method="mean")[v]))
        assert abs(float(a.mean()) - float(b.mean())) < 4 * se
