"""The scipy-free pieces of ``rescuemeta.freq`` (kept light so that ``rescuemeta freq`` does not import scipy)
against the scipy functions they replace: the bisection root finder against brentq on the tau^2 estimating
equations of random data sets and on functions with roots across 600 orders of magnitude; the normal p-value,
quantile, expit and logit against scipy.special, tails included."""

import math

import numpy as np
import pytest
from scipy import optimize, special

from rescuemeta.freq import _crit, _root, _upper_bracket, expit, logit, norm_sf2, tau2_pm, tau2_reml


def _brentq(f, hi):
    return optimize.brentq(f, 0.0, hi, xtol=1e-15, rtol=1e-15, maxiter=500)


@pytest.mark.parametrize("seed", range(200))
def test_tau2_roots_match_brentq(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 40))
    vi = rng.uniform(0.001, 2.0, k) ** rng.uniform(0.5, 3)
    yi = rng.normal(0, rng.uniform(0.01, 3.0), k) + rng.normal(0, np.sqrt(vi))
    for est in (tau2_reml, tau2_pm):
        t2 = est(yi, vi)
        if t2 == 0.0:
            continue
        # the same estimating equation, solved by brentq on the same bracket
        if est is tau2_reml:
            def f(t):
                w = 1 / (vi + t)
                sw = w.sum()
                r = yi - (w * yi).sum() / sw
                return float(np.sum((w * r) ** 2) - (sw - np.sum(w**2) / sw))
        else:
            def f(t):
                w = 1 / (vi + t)
                return float(np.sum(w * (yi - (w * yi).sum() / w.sum()) ** 2) - (k - 1))
        ref = _brentq(f, _upper_bracket(f, 10 * float(np.var(yi)) + 1.0))
        assert t2 == pytest.approx(ref, rel=1e-12, abs=1e-15), (est.__name__, k)


@pytest.mark.parametrize("exponent", [-300, -100, -20, -5, 0, 5, 20, 100, 300])
def test_root_across_scales(exponent):
    r = 3.7 * 10.0**exponent
    got = _root(lambda x: r - x, 0.0, 1e308)
    assert got == pytest.approx(r, rel=4e-16)
    assert (r - got) >= 0 and (r - np.nextafter(got, np.inf)) <= 0  # got and its successor bracket r


def test_root_needs_a_sign_change():
    with pytest.raises(ArithmeticError):
        _root(lambda x: 1.0, 0.0, 1.0)


@pytest.mark.parametrize("z", [0.0, 1e-8, 0.5, 1.96, 5.0, 10.0, 30.0, 37.5, -2.5, -38.0])
def test_two_sided_p_value(z):
    ref = 2 * special.ndtr(-abs(z))
    # relative precision kept in the far tail, up to the rounding of z / sqrt(2) (relative error z^2 eps)
    assert norm_sf2(z) == pytest.approx(ref, rel=1e-13 * max(1.0, z * z), abs=1e-300)


@pytest.mark.parametrize("level", [0.5, 0.8, 0.9, 0.95, 0.99, 0.999, 1 - 1e-9])
def test_normal_quantile(level):
    assert _crit(level, None) == pytest.approx(special.ndtri(1 - (1 - level) / 2), rel=1e-14)


@pytest.mark.parametrize("x", [-800.0, -40.0, -5.0, -1e-9, 0.0, 1e-9, 3.0, 40.0, 800.0])
def test_expit(x):
    assert expit(x) == pytest.approx(special.expit(x), rel=1e-14, abs=1e-300)


@pytest.mark.parametrize("p", [0.0, 1e-300, 1e-9, 0.2, 0.5, 0.77, 1 - 1e-9, 1.0])
def test_logit(p):
    ref = special.logit(p)
    got = logit(p)
    if math.isinf(ref):
        assert got == ref
    else:
        assert got == pytest.approx(ref, rel=1e-9, abs=1e-15)
    assert math.isnan(logit(1.5)) and math.isnan(logit(-0.1))


@pytest.mark.parametrize("seed", range(12))
def test_glmm_quadrature_gradient(seed):
    """The analytic gradient of the adaptive-quadrature log-likelihood equals its central differences."""
    from rescuemeta.freq import _agq_loglik

    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 15))
    ni = rng.integers(1, 400, k).astype(float)
    xi = np.floor(rng.uniform(0, 1, k) ** rng.uniform(0.3, 3) * (ni + 1)).clip(0, ni)
    nodes, weights = np.polynomial.hermite.hermgauss(7)
    mu, tau = rng.normal(0, 2), rng.uniform(0.01, 3)
    _, _, g = _agq_loglik(mu, tau, xi, ni, nodes, weights, grad=True)
    h = 1e-6
    num = [(_agq_loglik(mu + h, tau, xi, ni, nodes, weights)[0] - _agq_loglik(mu - h, tau, xi, ni, nodes, weights)[0])
           / (2 * h),
           (_agq_loglik(mu, tau + h, xi, ni, nodes, weights)[0] - _agq_loglik(mu, tau - h, xi, ni, nodes, weights)[0])
           / (2 * h)]
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-6 * max(1.0, float(np.abs(num).max())))


@pytest.mark.parametrize("seed", range(40))
def test_glmm_optimum_matches_scipy_lbfgsb(seed):
    """The scipy-free optimiser of the binomial-normal GLMM (freq._box_newton: projected Newton, Hessian from
    differences of the exact gradient) reaches the optimum scipy's L-BFGS-B finds (polished by Newton steps, as
    rma_glmm_plo did before), on random data sets: some with tau at its bound 0, some with rare events, some
    with large studies. Equal log-likelihoods (to 1e-9) and parameters (to 1e-5, 1e-4 where the likelihood is
    flat in tau)."""
    from rescuemeta.freq import _agq_loglik, _box_newton

    rng = np.random.default_rng(1000 + seed)
    k = int(rng.integers(2, 25))
    ni = rng.integers(5, 600, k).astype(float)
    base = rng.normal(-1.5, 1.5)
    tau_true = [0.0, 0.2, 1.0, 2.5][seed % 4]
    xi = rng.binomial(ni.astype(int), special.expit(base + tau_true * rng.normal(size=k))).astype(float)
    if np.all(xi == 0) or np.all(xi == ni):
        xi[0] = 1.0 if xi[0] == 0 else ni[0] - 1
    nodes, weights = np.polynomial.hermite.hermgauss(7)

    def fg(par):
        ll, _, g = _agq_loglik(par[0], abs(par[1]), xi, ni, nodes, weights, grad=True)
        return -ll, -g

    lo, hi = np.array([-30.0, 0.0]), np.array([30.0, 20.0])
    start = np.array([float(special.logit((xi.sum() + 0.5) / (ni.sum() + 1))), 0.3])
    ours, f_ours = _box_newton(fg, start, lo, hi)
    best = min((optimize.minimize(fg, np.array([start[0], t0]), method="L-BFGS-B", jac=True,
                                  bounds=list(zip(lo, hi)), options={"ftol": 1e-15, "gtol": 1e-11, "maxiter": 5000})
                for t0 in (0.05, 0.3, 1.0)), key=lambda r: r.fun)
    assert f_ours <= best.fun + 1e-9 * max(1.0, abs(best.fun))
    assert abs(f_ours - best.fun) <= 1e-9 * max(1.0, abs(best.fun))
    np.testing.assert_allclose(ours, best.x, atol=1e-4 if best.x[1] < 0.05 else 1e-5, rtol=1e-5)


def test_box_newton_holds_a_binding_bound_and_finds_interior_minima():
    """A quadratic whose minimum lies outside the box stops at the bound (the bound's coordinate held, the other
    still minimised); an interior minimum of a non-quadratic function is found as scipy finds it."""
    from rescuemeta.freq import _box_newton

    def quad(x):  # minimum at (1, -2): the box [0, 5] x [0, 5] binds the second coordinate at 0
        a = np.array([[2.0, 0.5], [0.5, 1.0]])
        d = x - np.array([1.0, -2.0])
        return float(d @ a @ d), 2 * a @ d

    x, _ = _box_newton(quad, np.array([3.0, 3.0]), np.zeros(2), np.full(2, 5.0))
    assert x[1] == 0.0 and x[0] == pytest.approx(0.5, abs=1e-9)  # d/dx0 = 0 at x1 = 0: 2 (x0 - 1) + 0.5 (2) = 0

    def rosen(x):
        f = (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
        g = np.array([-2 * (1 - x[0]) - 400 * x[0] * (x[1] - x[0] ** 2), 200 * (x[1] - x[0] ** 2)])
        return f, g

    x, f = _box_newton(rosen, np.array([-1.2, 1.0]), np.full(2, -5.0), np.full(2, 5.0))
    np.testing.assert_allclose(x, [1.0, 1.0], atol=1e-7)
    assert f < 1e-14
