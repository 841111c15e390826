"""The sampling stage's hand-written log density: the shared binomial graph (:func:`rescuemeta.models.build_model`
with ``shared_binomial``, a tau prior of :data:`rescuemeta.models.SHARED_TAU_FAMILIES` or ``uniform(a, b)``) as two
small numba C callbacks, with the gradient written out by the chain rule, for nutpie to sample.

Why this exists (issue 19). Every binomial fit of an analysis (contrast and proportion, with or without moderators,
every tau family) runs on that graph (uniform on tau with its own free variable, as PyMC's interval transform).
Compiled by PyTensor's numba backend it took 55-82 s from empty caches (numba compiling ~150 small functions,
measured in BENCHMARKS.md), a third of a first analysis and the largest single item of the test suite; its gradient
took ~23 us per evaluation. The same density written as two
loops over the studies compiles in a few seconds, is cached on disk by numba (``cache=True``: the code refers to
nothing but its arguments), and evaluates in a fraction of the time.

It is the same model, term for term, with the same normalising constants, free variables (``tau_log__`` or
``tau_interval__``,
``slopes``, ``u``, ``z``, ``b``, in that order) and expanded variables (``tau``, ``mu``, ``beta``, ``theta``,
``alpha``) as the PyMC graph; ``tests/test_native.py`` compares the log density, its gradient and the expanded
variables with PyTensor's at random points for every tau, effect, baseline and coefficient family, with moderators,
reported rows and single-arm data, and the gradient with finite differences. What the sampler sees is documented in
:mod:`rescuemeta.models` (the reparameterisations of mu, theta_i and alpha_i); with ``x`` the unconstrained vector:

    tau = exp(x_tau) (uniform(a, b): a + (b - a) expit(x_tau)); shift_i = X_i' slopes; D_i = 1 + tau^2 P_i; w_i = P_i / D_i
    Prec = 1 / scale^2 + sum w_i; mu = (loc / scale^2 + sum w_i (y_i - shift_i)) / Prec + u / sqrt(Prec)
    theta_i = (mu + shift_i + tau^2 P_i y_i) / D_i + tau z_i / sqrt(D_i)
    alpha_i = b_i + centre_i - c_i theta_i

    log p = log p_tau(tau) + log |d tau / d x_tau| + sum_j log p_coef(slope_j) + log p_mu(mu) - log(Prec) / 2
            + sum_i [log N(theta_i | mu + shift_i, tau^2) + log(tau / sqrt(D_i))]    (as a potential in r_i)
            + sum_i log p_alpha(alpha_i) + sum_i log Bin(c_i | n_ci, expit(alpha_i))
            + sum_i log Bin(a_i | n_ti, expit(use_baseline alpha_i + theta_i)) + sum_i m_i log N(y^rep_i | theta_i, s_i^2)

(P_i, y_i: the normal approximation's precision and estimate; see :func:`rescuemeta.models.approximation`.)

All data enter through one float64 array (:func:`pack`) whose header holds the sizes, the prior families' codes and
parameters and the sum of every constant term; nutpie passes its address to the callbacks as ``user_data``. One
compiled pair serves every number of studies and moderators. ``RESCUEMETA_NATIVE=0`` turns this path off (the
PyTensor graph is compiled instead, as before).
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading

import numba
import numpy as np
from numba.core import types

__all__ = ["NATIVE_VERSION", "NativeModel", "enabled", "supports", "compile_native", "pack", "logp_grad", "expand",
           "callbacks"]

NATIVE_VERSION = "rescuemeta-native-1"

# the location-scale families of the effect, baseline and coefficient priors, and where their (nu, location, scale)
# sit in the prior's parameters
LOCATION_FAMILIES = {"normal": (0, None, 0, 1), "student_t": (1, 0, 1, 2)}  # code, nu, location, scale

_H = 24  # header words
# header: 0 K, 1 slopes, 2 tau family, 3-5 effect/baseline/coefficient families, 6 use_baseline, 7 constant,
# 8-9 tau parameters, 10-12 effect (nu, loc, scale), 13-15 baseline, 16-18 coefficients, 19 total length
_STUDY_ARRAYS = ("events_treat", "n_treat", "events_control", "n_control", "est_y", "est_s", "est_mask", "approx_y",
                 "approx_prec", "base_shift", "base_center")
_LOG_2PI = math.log(2.0 * math.pi)
_lock = threading.Lock()


def enabled() -> bool:
    """Whether the hand-written path is on (``RESCUEMETA_NATIVE``, default on)."""
    return os.environ.get("RESCUEMETA_NATIVE", "1").strip().lower() not in ("0", "false", "no", "off")


def supports(structure) -> bool:
    """Whether ``structure`` (:func:`rescuemeta.models.structure_key`) is the shared binomial graph with the shared
    tau families or uniform and location-scale effect, baseline and coefficient priors: what this module
    implements."""
    return (enabled() and isinstance(structure, tuple) and len(structure) == 8 and structure[0] == "binomial"
            and structure[2] in ("shared", "uniform") and structure[5] == "coef"
            and all(f in LOCATION_FAMILIES for f in (structure[3], structure[4], structure[7])))


# --- the numba code -------------------------------------------------------------------------------------------

_JIT = {"cache": True, "error_model": "numpy", "fastmath": False}


@numba.njit(**_JIT)
def _log1pexp(a):
    if a > 0.0:
        return a + math.log1p(math.exp(-a))
    return math.log1p(math.exp(a))


@numba.njit(**_JIT)
def _expit(a):
    if a >= 0.0:
        return 1.0 / (1.0 + math.exp(-a))
    e = math.exp(a)
    return e / (1.0 + e)


@numba.njit(**_JIT)
def _loc_kernel(fam, nu, loc, scale, x):
    """log density of a location-scale family at x without its constant, and its derivative."""
    q = (x - loc) / scale
    if fam == 0:
        return -0.5 * q * q, -q / scale
    return -0.5 * (nu + 1.0) * math.log1p(q * q / nu), -(nu + 1.0) * q / (scale * (nu + q * q))


@numba.njit(**_JIT)
def _tau_kernel(fam, p0, p1, tau, lt):
    """log p(tau) of a shared tau family (codes in the order of models.SHARED_TAU_FAMILIES) without its constant, and its
    derivative with respect to log tau (as :func:`rescuemeta.models._tau_kernel`)."""
    if fam == 0:  # halfnormal
        q = (tau / p0) ** 2
        return -0.5 * q, -q
    if fam == 1:  # halfcauchy
        q = (tau / p0) ** 2
        return -math.log1p(q), -2.0 * q / (1.0 + q)
    if fam == 2:  # halft(nu, scale)
        q = (tau / p1) ** 2 / p0
        return -0.5 * (p0 + 1.0) * math.log1p(q), -(p0 + 1.0) * q / (1.0 + q)
    if fam == 3:  # exponential
        return -p0 * tau, -p0 * tau
    if fam == 4:  # lognormal
        return -lt - 0.5 * ((lt - p0) / p1) ** 2, -1.0 - (lt - p0) / (p1 * p1)
    if fam == 5:  # invgamma on tau^2
        return -(2.0 * p0 + 1.0) * lt - p1 / (tau * tau), -(2.0 * p0 + 1.0) + 2.0 * p1 / (tau * tau)
    # lognormal2: log tau^2 ~ N(p0, p1^2)
    return -lt - 0.5 * ((2.0 * lt - p0) / p1) ** 2, -1.0 - 2.0 * (2.0 * lt - p0) / (p1 * p1)


UNIFORM = 7  # the tau-family code of uniform(a, b): tau = a + (b - a) expit(x), PyMC's interval transform


@numba.njit(**_JIT)
def _tau_of(fam, p0, p1, x):
    """tau and d tau / d x from the unconstrained x: exp(x) for the shared families, PyMC's interval transform for
    uniform(p0, p1)."""
    if fam == UNIFORM:
        s = _expit(x)
        return p0 + (p1 - p0) * s, (p1 - p0) * s * (1.0 - s)
    tau = math.exp(x)
    return tau, tau


@numba.njit(**_JIT)
def logp_grad(x, grad, d):
    """The log density at ``x`` (returned) and its gradient (written into ``grad``) for the packed data ``d``."""
    K = int(d[0])
    ns = int(d[1])
    tfam = int(d[2])
    efam = int(d[3])
    bfam = int(d[4])
    cfam = int(d[5])
    ub = d[6]
    o = _H
    et = d[o:o + K]
    nt = d[o + K:o + 2 * K]
    ec = d[o + 2 * K:o + 3 * K]
    nc = d[o + 3 * K:o + 4 * K]
    ey = d[o + 4 * K:o + 5 * K]
    es = d[o + 5 * K:o + 6 * K]
    em = d[o + 6 * K:o + 7 * K]
    ay = d[o + 7 * K:o + 8 * K]
    ap = d[o + 8 * K:o + 9 * K]
    bs = d[o + 9 * K:o + 10 * K]
    bc = d[o + 10 * K:o + 11 * K]
    X = d[o + 11 * K:o + 11 * K + K * ns]

    u = x[1 + ns]
    z0 = 2 + ns
    b0 = 2 + ns + K
    logp = d[7]
    tau, dtau = _tau_of(tfam, d[8], d[9], x[0])
    if tfam == UNIFORM:  # density 1 / (b - a) times the Jacobian (b - a) s (1 - s), s = expit(x): only the latter
        logp += -x[0] - 2.0 * _log1pexp(-x[0])
        g_x = 1.0 - 2.0 * _expit(x[0])
    else:  # the family's density in log tau (its Jacobian tau included)
        v, dv = _tau_kernel(tfam, d[8], d[9], tau, x[0])
        logp += v + x[0]
        g_x = dv + 1.0
    t2 = tau * tau
    for j in range(ns):
        v, dv = _loc_kernel(cfam, d[16], d[17], d[18], x[1 + j])
        logp += v
        grad[1 + j] = dv

    shift = np.zeros(K)
    for i in range(K):
        s = 0.0
        for j in range(ns):
            s += X[i * ns + j] * x[1 + j]
        shift[i] = s
    scale = d[12]
    prec = 1.0 / (scale * scale)
    A = d[11] / (scale * scale)
    for i in range(K):
        w = ap[i] / (1.0 + t2 * ap[i])
        prec += w
        A += w * (ay[i] - shift[i])
    sd = 1.0 / math.sqrt(prec)
    mu = A / prec + sd * u
    v, g_mu = _loc_kernel(efam, d[10], d[11], d[12], mu)
    logp += v - 0.5 * math.log(prec)

    g_tau = 0.0
    g_shift = np.empty(K)
    for i in range(K):
        P = ap[i]
        D = 1.0 + t2 * P
        root = math.sqrt(D)
        z = x[z0 + i]
        M = mu + shift[i]
        theta = (M + t2 * P * ay[i]) / D + tau * z / root
        r = tau * P * (ay[i] - M) / D + z / root
        alpha = x[b0 + i] + bc[i] - bs[i] * theta
        lpt = ub * alpha + theta
        vb, g_alpha = _loc_kernel(bfam, d[13], d[14], d[15], alpha)
        res = (ey[i] - theta) / es[i]
        logp += (-0.5 * r * r - 0.5 * math.log(D) + vb + ec[i] * alpha - nc[i] * _log1pexp(alpha)
                 + et[i] * lpt - nt[i] * _log1pexp(lpt) - 0.5 * em[i] * res * res)
        g_lpt = et[i] - nt[i] * _expit(lpt)
        g_alpha += ec[i] - nc[i] * _expit(alpha) + ub * g_lpt
        grad[b0 + i] = g_alpha
        g_theta = g_lpt + em[i] * res / es[i] - bs[i] * g_alpha
        h = -r
        g_M = g_theta / D - h * tau * P / D
        grad[z0 + i] = (g_theta * tau + h) / root
        dm = ay[i] - M
        g_tau += (g_theta * (2.0 * tau * P * dm / (D * D) + z / (D * root))
                  + h * (P * dm * (1.0 - t2 * P) / (D * D) - z * tau * P / (D * root)) - tau * P / D)
        g_mu += g_M
        g_shift[i] = g_M

    grad[1 + ns] = g_mu * sd
    g_A = g_mu / prec
    g_prec = g_mu * (-A / (prec * prec) - 0.5 * u * sd / prec) - 0.5 / prec
    for i in range(K):
        P = ap[i]
        D = 1.0 + t2 * P
        w = P / D
        g_w = g_A * (ay[i] - shift[i]) + g_prec
        g_tau += g_w * (-2.0 * tau * P * P / (D * D))
        g_shift[i] -= g_A * w
    for j in range(ns):
        s = 0.0
        for i in range(K):
            s += X[i * ns + j] * g_shift[i]
        grad[1 + j] += s
    grad[0] = g_x + g_tau * dtau
    return logp


@numba.njit(**_JIT)
def expand(x, out, d):
    """The expanded variables at ``x``: ``x`` itself, then tau, mu, beta (mu and the slopes), theta, alpha."""
    K = int(d[0])
    ns = int(d[1])
    o = _H
    ay = d[o + 7 * K:o + 8 * K]
    ap = d[o + 8 * K:o + 9 * K]
    bs = d[o + 9 * K:o + 10 * K]
    bc = d[o + 10 * K:o + 11 * K]
    X = d[o + 11 * K:o + 11 * K + K * ns]
    n = 2 + ns + 2 * K
    for i in range(n):
        out[i] = x[i]
    tau, _ = _tau_of(int(d[2]), d[8], d[9], x[0])
    t2 = tau * tau
    scale = d[12]
    prec = 1.0 / (scale * scale)
    A = d[11] / (scale * scale)
    shift = np.zeros(K)
    for i in range(K):
        s = 0.0
        for j in range(ns):
            s += X[i * ns + j] * x[1 + j]
        shift[i] = s
        w = ap[i] / (1.0 + t2 * ap[i])
        prec += w
        A += w * (ay[i] - s)
    mu = A / prec + x[1 + ns] / math.sqrt(prec)
    out[n] = tau
    out[n + 1] = mu
    out[n + 2] = mu
    for j in range(ns):
        out[n + 3 + j] = x[1 + j]
    t0 = n + 3 + ns
    for i in range(K):
        P = ap[i]
        D = 1.0 + t2 * P
        theta = (mu + shift[i] + t2 * P * ay[i]) / D + tau * x[2 + ns + i] / math.sqrt(D)
        out[t0 + i] = theta
        out[t0 + K + i] = x[2 + ns + K + i] + bc[i] - bs[i] * theta
    return 0


_LOGP_SIG = types.int64(types.uint64, types.CPointer(types.double), types.CPointer(types.double),
                        types.CPointer(types.double), types.voidptr)
_EXPAND_SIG = types.int64(types.uint64, types.uint64, types.CPointer(types.double), types.CPointer(types.double),
                          types.voidptr)


def _n_dim(d) -> int:
    return 2 + int(d[1]) + 2 * int(d[0])


def _logp_c(dim, x_, grad_, logp_, ud_):
    head = numba.carray(ud_, (_H,), np.float64)
    n_d = int(head[19])
    d = numba.carray(ud_, (n_d,), np.float64)
    if dim != 2 + int(d[1]) + 2 * int(d[0]):
        return -1
    x = numba.carray(x_, (dim,))
    grad = numba.carray(grad_, (dim,))
    lp = numba.carray(logp_, (1,))
    val = logp_grad(x, grad, d)
    lp[0] = val
    for i in range(dim):
        if not math.isfinite(grad[i]):
            return 3
    if not math.isfinite(val):
        return 4
    return 0


def _expand_c(dim, expanded, x_, out_, ud_):
    head = numba.carray(ud_, (_H,), np.float64)
    n_d = int(head[19])
    d = numba.carray(ud_, (n_d,), np.float64)
    K = int(d[0])
    ns = int(d[1])
    if dim != 2 + ns + 2 * K or expanded != dim + 3 + ns + 2 * K:
        return -1
    x = numba.carray(x_, (dim,))
    out = numba.carray(out_, (expanded,))
    return expand(x, out, d)


_CALLBACKS: list = []


def callbacks():
    """The two C callbacks (log density with gradient, expansion), compiled on first use (numba's disk cache makes
    that a load after the first process)."""
    with _lock:
        if not _CALLBACKS:
            _CALLBACKS.extend([numba.cfunc(_LOGP_SIG, **_JIT)(_logp_c), numba.cfunc(_EXPAND_SIG, **_JIT)(_expand_c)])
    return _CALLBACKS[0], _CALLBACKS[1]


# --- the data ------------------------------------------------------------------------------------------------

def _loc_params(family: str, par) -> tuple[int, float, float, float, float]:
    """(code, nu, location, scale, log normalising constant) of a location-scale prior's parameter vector."""
    from scipy.special import gammaln

    code, i_nu, i_loc, i_scale = LOCATION_FAMILIES[family]
    par = np.asarray(par, dtype=float)
    nu = float(par[i_nu]) if i_nu is not None else 0.0
    loc, scale = float(par[i_loc]), float(par[i_scale])
    if code == 0:
        const = -math.log(scale) - 0.5 * _LOG_2PI
    else:
        const = float(gammaln((nu + 1) / 2) - gammaln(nu / 2)) - 0.5 * math.log(nu * math.pi) - math.log(scale)
    return code, nu, loc, scale, const


def pack(families: tuple[str, str, str], data: dict, uniform: bool = False) -> np.ndarray:
    """The packed float64 array the callbacks read, from the ``pm.Data`` values of the shared binomial graph
    (:func:`rescuemeta.models.prior_data` and :func:`rescuemeta.models.observed_data`) and the effect, baseline and
    coefficient prior families (``uniform``: tau's prior is uniform(a, b), ``tau_par`` = (a, b); else one of the
    shared families, chosen by ``tau_family``). The header's constant is the sum of every term of the log density
    that does not depend on the parameters (binomial coefficients, normalising constants), so that the value equals
    PyMC's."""
    from scipy.special import gammaln

    a = {name: np.asarray(data[name], dtype=float) for name in _STUDY_ARRAYS}
    K = len(a["approx_y"])
    mods = np.asarray(data["mods_x"], dtype=float).reshape(K, -1)
    ns = mods.shape[1]
    if not uniform:  # the shared families: a one-hot choice, a normalising constant
        onehot = np.asarray(data["tau_family"], dtype=float)
        tfam = int(np.argmax(onehot))
        if not (onehot[tfam] == 1.0 and np.count_nonzero(onehot) == 1):
            raise ValueError("tau_family must be one-hot")
        tpar = np.asarray(data["tau_par"], dtype=float)[tfam]
        tau_const = float(np.asarray(data["tau_const"]))
    else:  # uniform(a, b): its density and the interval transform's Jacobian share the constant log(b - a)
        tfam, tpar, tau_const = UNIFORM, np.asarray(data["tau_par"], dtype=float)[:2], 0.0
    eff = _loc_params(families[0], data["mu_par"])
    base = _loc_params(families[1], data["alpha_par"])
    coef = _loc_params(families[2], data["coef_par"])
    binom = 0.0
    for k_name, n_name in (("events_treat", "n_treat"), ("events_control", "n_control")):
        k, n = a[k_name], a[n_name]
        binom += float(np.sum(gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)))
    rep = float(np.sum(a["est_mask"] * (-np.log(a["est_s"]) - 0.5 * _LOG_2PI)))
    const = (tau_const + eff[4] + K * base[4] + ns * coef[4] - 0.5 * K * _LOG_2PI
             + binom + rep)
    n_total = _H + 11 * K + K * ns
    out = np.zeros(n_total)
    out[:20] = [K, ns, tfam, eff[0], base[0], coef[0], float(np.asarray(data["use_baseline"])), const,
                tpar[0], tpar[1], eff[1], eff[2], eff[3], base[1], base[2], base[3], coef[1], coef[2], coef[3],
                n_total]
    for j, name in enumerate(_STUDY_ARRAYS):
        out[_H + j * K:_H + (j + 1) * K] = a[name]
    out[_H + 11 * K:] = mods.ravel()
    out.flags.writeable = False
    return out


# --- the nutpie model ----------------------------------------------------------------------------------------

def _nutpie_class():
    from nutpie.compile_pymc import CompiledPyMCModel

    @dataclasses.dataclass(frozen=True)
    class _Native(CompiledPyMCModel):
        families: tuple = ("normal", "normal", "normal")
        uniform_tau: bool = False

        def with_data(self, **updates):
            shared = {**self.shared_data, **updates}
            packed = pack(self.families, shared, self.uniform_tau)
            if _n_dim(packed) != self._n_dim:
                raise ValueError(f"data for {_n_dim(packed)} parameters given to a model of {self._n_dim}")
            return dataclasses.replace(self, shared_data=shared, user_data=packed, logp_func=_logp_func(packed),
                                       expand_func=_expand_func(packed, self.n_expanded))

    return _Native


NativeModel = None  # the nutpie model class (a CompiledPyMCModel), created on first use (nutpie imports slowly)


def compile_native(structure):
    """The nutpie model of the shared binomial ``structure`` (see :func:`supports`), without data: give it data
    with ``with_data`` (all the ``pm.Data`` values of the graph) before sampling.

    Returns
    -------
    nutpie.compile_pymc.CompiledPyMCModel
        Sampled by ``nutpie.sample`` like the PyTensor-compiled model of the same structure. After ``with_data``,
        ``logp_func(x)`` returns (log density, gradient) and ``expand_func(x)`` the expanded vector (the numba
        functions the callbacks call, from Python).
    """
    global NativeModel
    import pandas as pd

    if not supports(structure):
        raise ValueError(f"no hand-written log density for {structure!r}")
    with _lock:
        if NativeModel is None:
            NativeModel = _nutpie_class()
    logp_c, expand_c = callbacks()
    K, n_coef = int(structure[1]), int(structure[6])
    ns = n_coef - 1
    n_dim = 2 + ns + 2 * K
    n_expanded = n_dim + 3 + ns + 2 * K
    names = ["tau_interval__" if structure[2] == "uniform" else "tau_log__", "slopes", "u", "z", "b", "tau", "mu",
             "beta", "theta", "alpha"]
    sizes = [1, ns, 1, K, K, 1, 1, n_coef, K, K]
    shapes = [(), (ns,), (), (K,), (K,), (), (), (n_coef,), (K,), (K,)]
    slices, start = [], 0
    for n in sizes:
        slices.append(slice(start, start + n))
        start += n
    shape_info = (names, slices, [np.array(s, dtype=int) for s in shapes])
    dims = {"slopes": ("slope",), "beta": ("coef",), "z": ("study",), "theta": ("study",), "b": ("study",),
            "alpha": ("study",)}
    coords = {"study": pd.Index(np.arange(K)), "coef": pd.Index(np.arange(n_coef)),
              "slope": pd.Index(np.arange(ns))}
    families = (structure[3], structure[4], structure[7])

    def initial_point(seed=None):
        # PyMC's default for these flat variables: 0 jittered by U(-1, 1)
        return np.random.default_rng(seed).uniform(-1.0, 1.0, n_dim)

    model = NativeModel(
        _n_dim=n_dim, dims=dims, _coords=coords, _shapes={n: s for n, s in zip(names, shapes, strict=True)},
        compiled_logp_func=logp_c, compiled_expand_func=expand_c, initial_point_func=initial_point,
        shared_data={}, user_data=np.zeros(_H), n_expanded=n_expanded, shape_info=shape_info,
        logp_func=None, expand_func=None, families=families, uniform_tau=structure[2] == "uniform")
    return model


def _logp_func(d):
    def f(x):
        x = np.ascontiguousarray(x, dtype=float)
        g = np.zeros_like(x)
        return logp_grad(x, g, d), g

    return f


def _expand_func(d, n_expanded):
    def f(x):
        out = np.zeros(n_expanded)
        expand(np.ascontiguousarray(x, dtype=float), out, d)
        return out

    return f
