"""Frequentist pooling, matching R metafor 3.8 (``rma``, ``rma.mh``, ``rma.peto``, ``rma.glmm``).

Random-effects inverse-variance pooling with tau^2 by DerSimonian-Laird (``DL``), restricted maximum
likelihood (``REML``) or Paule-Mandel (``PM``), optionally with the Hartung-Knapp-Sidik-Jonkman
adjustment; Mantel-Haenszel (``MH``: OR, RR, RD) and Peto (``PETO``: OR) common-effect methods; and the
binomial-normal GLMM for single-arm proportions (``GLMM``: ML, adaptive Gauss-Hermite quadrature with
7 nodes as metafor/lme4 use by default).

Iterative estimators are solved to machine precision (root finding, not metafor's default stopping rule);
the reference values in ``tests/data/metafor_reference.json`` were produced with tightened controls.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist

import numpy as np

from .effects import ContinuityCorrection, escalc
from .errors import NotEstimable

__all__ = ["METHODS", "IV_METHODS", "FreqResult", "study_table", "expit", "logit", "norm_sf2", "tau2_dl", "tau2_pm",
           "tau2_reml", "rma_iv", "rma_mh", "rma_peto", "rma_glmm_plo", "meta_analyze"]

METHODS = ("DL", "REML", "PM", "MH", "PETO", "GLMM")
IV_METHODS = ("DL", "REML", "PM", "EE")


@dataclass
class FreqResult:
    """One pooled estimate.

    Attributes
    ----------
    estimate, se, ci_low, ci_high : float
        Pooled effect on the analysis scale (log OR, log RR, RD, or logit p) with its standard error and
        confidence interval (``level``, default 95%).
    pval : float
        Two-sided p-value for the null of no effect (0 on the analysis scale); t with k-1 df under HKSJ.
    tau2 : float
        Between-study variance (0 for the common-effect methods MH and PETO).
    i2 : float
        I^2 in percent: the share of total variability attributed to heterogeneity (metafor's definition,
        tau2 / (tau2 + typical within-study variance); for MH/PETO (Q - (k-1)) / Q).
    q : float or None
        Cochran's Q (None for the GLMM, which has no such statistic).
    k : int
        Number of studies that contributed.
    pi_low, pi_high : float or None
        95% prediction interval for the effect in a new study (None for common-effect methods).
    """

    measure: str
    method: str
    hksj: bool
    estimate: float
    se: float
    ci_low: float
    ci_high: float
    pval: float
    tau2: float
    i2: float
    q: float | None
    k: int
    pi_low: float | None
    pi_high: float | None
    level: float = 0.95
    notes: list[str] = field(default_factory=list)

    @property
    def natural(self) -> dict:
        """Back-transformed estimate and CI: exp for OR/RR, expit for PLO, identity for RD."""
        f = _natural_transform(self.measure)
        return {"estimate": f(self.estimate), "ci_low": f(self.ci_low), "ci_high": f(self.ci_high)}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["natural"] = self.natural
        return d


def study_table(measure: str, ai, n1i, ci, n2i, tau2: float = 0.0, cc: ContinuityCorrection | None = None,
                level: float = 0.95) -> list[dict]:
    """Per-study effects as metafor's ``escalc`` gives them, with Wald confidence limits and inverse-variance
    weights at ``tau2``.

    Returns
    -------
    list of dict
        One per study, in input order: ``yi``, ``vi`` (analysis scale; None where the study has no finite
        estimate, e.g. a double-zero study), ``ci_low``, ``ci_high`` (analysis scale), and ``weight``: the
        percentage weight 1/(vi + tau2) of the random-effects model (the common-effect weights when tau2 = 0).
    """
    es = escalc(measure, ai, n1i, ci, n2i, cc or ContinuityCorrection())
    return study_rows(es.yi, es.vi, tau2, level)


def study_rows(yi, vi, tau2: float = 0.0, level: float = 0.95) -> list[dict]:
    """:func:`study_table` from effect sizes ``yi``, ``vi`` (count rows and reported estimates alike)."""
    yi, vi = np.asarray(yi, dtype=float), np.asarray(vi, dtype=float)
    ok = np.isfinite(yi) & np.isfinite(vi)
    w = np.where(ok, 1 / np.where(ok, vi + tau2, 1.0), 0.0)
    w = 100 * w / w.sum() if w.sum() > 0 else w
    z = _crit(level, None)
    rows: list[dict[str, float | None]] = []
    for i in range(len(yi)):
        if not ok[i]:
            rows.append({"yi": None, "vi": None, "ci_low": None, "ci_high": None, "weight": None})
            continue
        half = z * math.sqrt(vi[i])
        rows.append({"yi": float(yi[i]), "vi": float(vi[i]), "ci_low": float(yi[i] - half),
                     "ci_high": float(yi[i] + half), "weight": float(w[i])})
    return rows


# The normal distribution comes from the standard library (math.erfc, statistics.NormalDist: accurate to
# double precision in both tails) and scipy.special only where Student's t is needed (HKSJ); the GLMM uses numpy
# alone: importing scipy costs about 0.5 s, a quarter of `rescuemeta freq`'s run time (measured in BENCHMARKS.md).

def expit(x: float) -> float:
    """Logistic function 1 / (1 + exp(-x)), without overflow for large |x|."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def logit(p: float) -> float:
    """log(p / (1 - p)); -inf at 0 and +inf at 1 (as scipy.special.logit), nan outside [0, 1]."""
    if p == 0:
        return -math.inf
    if p == 1:
        return math.inf
    if not 0 < p < 1:
        return math.nan
    return math.log(p) - math.log1p(-p)


def norm_sf2(z: float) -> float:
    """Two-sided normal p-value 2 P(Z > |z|) = erfc(|z| / sqrt 2), relative precision kept in the far tail."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def _expit_array(x) -> np.ndarray:
    """Elementwise logistic function of an array, without overflow (numpy only: the GLMM is the one fit of
    ``rescuemeta check`` and this keeps scipy out of it)."""
    x = np.asarray(x, dtype=float)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _log_binom(n: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log C(n, x) elementwise, by math.lgamma (exact to double precision; k is small)."""
    return np.array([math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)
                     for a, b in zip(np.ravel(n), np.ravel(x))], dtype=float).reshape(np.shape(n))


def _natural_transform(measure: str):
    if measure in ("OR", "RR"):
        return lambda x: float(math.exp(x))
    if measure == "PLO":
        return lambda x: expit(float(x))
    return float


def _crit(level: float, df: int | None) -> float:
    a = 1 - (1 - level) / 2
    if df is None:
        return NormalDist().inv_cdf(a)
    from scipy import special
    return float(special.stdtrit(df, a))


def _pval(stat: float, df: int | None) -> float:
    if df is None:
        return norm_sf2(stat)
    from scipy import special
    return float(2 * special.stdtr(df, -abs(stat)))


# ---------------------------------------------------------------------------------------------------
# Inverse-variance random effects
# ---------------------------------------------------------------------------------------------------

def tau2_dl(yi: np.ndarray, vi: np.ndarray) -> float:
    """DerSimonian-Laird moment estimator, truncated at 0."""
    w = 1 / vi
    k = len(yi)
    mu = np.sum(w * yi) / np.sum(w)
    q = np.sum(w * (yi - mu) ** 2)
    c = np.sum(w) - np.sum(w**2) / np.sum(w)
    return float(max(0.0, (q - (k - 1)) / c)) if c > 0 else 0.0


def _root(f, lo: float, hi: float) -> float:
    """A sign change of ``f`` in [lo, hi], where f(lo) > 0 > f(hi), by bisection to adjacent doubles.

    Bisection rather than scipy's brentq keeps scipy.optimize (0.2-0.3 s to import) out of ``rescuemeta freq``;
    it halves the bracket until no double lies between its ends (at most about 1100 steps, typically 60-70 for
    the tau^2 scale), so it returns the same sign change brentq converges to, to machine precision
    (``tests/test_freq_root.py`` compares the two).
    """
    flo = f(lo)
    if not (flo > 0 > f(hi)):
        raise ArithmeticError("the bracket does not hold a sign change")
    for _ in range(2200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        fm = f(mid)
        if fm == 0:
            return float(mid)
        if fm > 0:
            lo = mid
        else:
            hi = mid
    return float(lo)


def _upper_bracket(f, start: float) -> float:
    hi = max(start, 1e-4)
    for _ in range(200):
        if f(hi) < 0:
            return hi
        hi *= 2
    raise ArithmeticError("could not bracket the tau^2 estimate")


def tau2_pm(yi: np.ndarray, vi: np.ndarray) -> float:
    """Paule-Mandel: tau^2 solving the generalised Q = k - 1 (0 if Q(0) <= k - 1)."""
    k = len(yi)

    def f(t2):
        w = 1 / (vi + t2)
        mu = np.sum(w * yi) / np.sum(w)
        return float(np.sum(w * (yi - mu) ** 2) - (k - 1))

    if f(0.0) <= 0:
        return 0.0
    hi = _upper_bracket(f, 10 * float(np.var(yi)) + 1.0)
    return _root(f, 0.0, hi)


def tau2_reml(yi: np.ndarray, vi: np.ndarray) -> float:
    """REML: root of the restricted score equation -tr(P)/2 + y'PPy/2 = 0 (0 if the score at 0 is <= 0)."""

    def score(t2):
        w = 1 / (vi + t2)
        sw = np.sum(w)
        mu = np.sum(w * yi) / sw
        r = yi - mu
        tr_p = sw - np.sum(w**2) / sw
        py = w * r  # P y for an intercept-only model
        return float(np.sum(py**2) - tr_p)

    if score(0.0) <= 0:
        return 0.0
    hi = _upper_bracket(score, 10 * float(np.var(yi)) + 1.0)
    return _root(score, 0.0, hi)


def rma_iv(yi, vi, *, method: str = "REML", hksj: bool = False, level: float = 0.95,
           measure: str = "OR") -> FreqResult:
    """Inverse-variance pooling (metafor ``rma.uni``, intercept only).

    Parameters
    ----------
    yi, vi : array_like
        Study estimates and sampling variances; studies with non-finite values are dropped.
    method : {"DL", "REML", "PM", "EE"}
        tau^2 estimator (``EE``: common effect, tau^2 = 0).
    hksj : bool
        Hartung-Knapp-Sidik-Jonkman standard error with t(k-1) intervals, as metafor ``test="knha"``.

    Returns
    -------
    FreqResult
    """
    yi = np.asarray(yi, dtype=float)
    vi = np.asarray(vi, dtype=float)
    ok = np.isfinite(yi) & np.isfinite(vi) & (vi > 0)
    yi, vi = yi[ok], vi[ok]
    k = len(yi)
    if k == 0:
        raise NotEstimable("no study has a usable estimate")
    notes = []
    if hksj and k < 2:  # as metafor: 'Setting argument test="z" since k=1'
        hksj = False
        notes.append("one study: the Hartung-Knapp-Sidik-Jonkman adjustment needs k >= 2; z-test used (as metafor)")
    if method not in IV_METHODS:
        raise NotEstimable(f"unknown tau^2 method {method!r}")
    if k == 1 or method == "EE":
        tau2 = 0.0
    else:
        tau2 = {"DL": tau2_dl, "REML": tau2_reml, "PM": tau2_pm}[method](yi, vi)
    w = 1 / (vi + tau2)
    sw = np.sum(w)
    mu = float(np.sum(w * yi) / sw)
    se = float(math.sqrt(1 / sw))
    df = None
    if hksj:
        df = k - 1
        se = float(math.sqrt(np.sum(w * (yi - mu) ** 2) / ((k - 1) * sw)))
    crit = _crit(level, df)
    stat = mu / se if se > 0 else math.inf
    pval = _pval(stat, df)
    w0 = 1 / vi
    mu_fe = np.sum(w0 * yi) / np.sum(w0)
    q = float(np.sum(w0 * (yi - mu_fe) ** 2))
    if k > 1:
        vt = (k - 1) * np.sum(w0) / (np.sum(w0) ** 2 - np.sum(w0**2))
        i2 = float(100 * tau2 / (vt + tau2))
    else:
        i2 = 0.0
    pse = math.sqrt(se**2 + tau2)
    return FreqResult(measure=measure, method=method, hksj=hksj, estimate=mu, se=se,
                      ci_low=mu - crit * se, ci_high=mu + crit * se, pval=pval, tau2=tau2, i2=i2, q=q,
                      k=k, pi_low=mu - crit * pse, pi_high=mu + crit * pse, level=level, notes=notes)


# ---------------------------------------------------------------------------------------------------
# Common-effect methods on 2x2 tables
# ---------------------------------------------------------------------------------------------------

def _q_from_escalc(measure, ai, n1i, ci, n2i, beta):
    """Cochran's Q and I^2 as rma.mh / rma.peto compute them (yi with add 1/2 to only0, drop00)."""
    es = escalc(measure, ai, n1i, ci, n2i, ContinuityCorrection(0.5, "only0", True))
    ok = es.usable
    yi, vi = es.yi[ok], es.vi[ok]
    k_yi = len(yi)
    if k_yi > 1:
        q = float(max(0.0, np.sum((yi - beta) ** 2 / vi)))
        i2 = float(max(0.0, 100 * (q - (k_yi - 1)) / q)) if q > 0 else 0.0
    else:
        q, i2 = 0.0, 0.0
    return q, i2


def rma_mh(ai, n1i, ci, n2i, *, measure: str = "OR", level: float = 0.95) -> FreqResult:
    """Mantel-Haenszel common effect (metafor ``rma.mh``; Robins-Breslow-Greenland variance for OR,
    Greenland-Robins for RR and RD). Uses the counts without continuity correction."""
    ai, n1i, ci, n2i = (np.asarray(x, dtype=float) for x in (ai, n1i, ci, n2i))
    bi, di = n1i - ai, n2i - ci
    ni = n1i + n2i
    k = len(ai)
    if measure == "OR":
        p = (ai + di) / ni
        qq = (bi + ci) / ni
        r = ai * di / ni
        s = bi * ci / ni
        R, S = r.sum(), s.sum()
        if R == 0 or S == 0:
            raise NotEstimable("the Mantel-Haenszel odds ratio is 0 or infinite for these tables")
        beta = math.log(R / S)
        se = math.sqrt(0.5 * (np.sum(p * r) / R**2 + np.sum(p * s + qq * r) / (R * S) + np.sum(qq * s) / S**2))
    elif measure == "RR":
        R = np.sum(ai * n2i / ni)
        S = np.sum(ci * n1i / ni)
        if ai.sum() == 0 or ci.sum() == 0:
            raise NotEstimable("the Mantel-Haenszel risk ratio is 0 or infinite for these tables")
        beta = math.log(R / S)
        se = math.sqrt(np.sum(n1i / ni * n2i / ni * (ai + ci) - ai / ni * ci) / (R * S))
    elif measure == "RD":
        denom = np.sum(n1i * n2i / ni)
        beta = float(np.sum(ai * n2i / ni - ci * n1i / ni) / denom)
        num = beta * np.sum(ci * (n1i / ni) ** 2 - ai * (n2i / ni) ** 2 + n1i / ni * n2i / ni * (n2i - n1i) / 2) \
            + np.sum(ai * (n2i - ci) / ni + ci * (n1i - ai) / ni) / 2
        se = math.sqrt(num / denom**2)
    else:
        raise NotEstimable(f"Mantel-Haenszel is for OR, RR and RD, not {measure!r}")
    crit = _crit(level, None)
    q, i2 = _q_from_escalc(measure, ai, n1i, ci, n2i, beta)
    return FreqResult(measure=measure, method="MH", hksj=False, estimate=float(beta), se=float(se),
                      ci_low=beta - crit * se, ci_high=beta + crit * se,
                      pval=norm_sf2(beta / se), tau2=0.0, i2=i2, q=q, k=k,
                      pi_low=None, pi_high=None, level=level,
                      notes=["common-effect method: no between-study variance, no prediction interval"])


def rma_peto(ai, n1i, ci, n2i, *, level: float = 0.95) -> FreqResult:
    """Peto's one-step odds ratio (metafor ``rma.peto``), common effect, no continuity correction."""
    ai, n1i, ci, n2i = (np.asarray(x, dtype=float) for x in (ai, n1i, ci, n2i))
    bi, di = n1i - ai, n2i - ci
    ni = n1i + n2i
    xt, yt = ai + ci, bi + di
    ei = xt * n1i / ni
    with np.errstate(divide="ignore", invalid="ignore"):
        vv = xt * yt * (n1i / ni) * (n2i / ni) / (ni - 1)
    vv = np.where(np.isfinite(vv), vv, 0.0)
    sv = vv.sum()
    if sv == 0:
        raise NotEstimable("Peto's method needs at least one table with events and non-events")
    beta = float(np.sum(ai - ei) / sv)
    se = float(math.sqrt(1 / sv))
    crit = _crit(level, None)
    pos = vv > 0
    q = float(max(0.0, np.sum((ai[pos] - ei[pos]) ** 2 / vv[pos]) - np.sum(ai - ei) ** 2 / sv))
    es = escalc("OR", ai, n1i, ci, n2i, ContinuityCorrection(0.5, "only0", True))
    k_yi = int(es.usable.sum())
    i2 = float(max(0.0, 100 * (q - (k_yi - 1)) / q)) if (pos.sum() > 1 and q > 0) else 0.0
    if pos.sum() <= 1:
        q = 0.0
    return FreqResult(measure="OR", method="PETO", hksj=False, estimate=beta, se=se,
                      ci_low=beta - crit * se, ci_high=beta + crit * se,
                      pval=norm_sf2(beta / se), tau2=0.0, i2=i2, q=q, k=len(ai),
                      pi_low=None, pi_high=None, level=level,
                      notes=["common-effect method: no between-study variance, no prediction interval"])


# ---------------------------------------------------------------------------------------------------
# Binomial-normal GLMM for single-arm proportions
# ---------------------------------------------------------------------------------------------------

def _agq_loglik(mu: float, tau: float, xi: np.ndarray, ni: np.ndarray, nodes: np.ndarray,
                weights: np.ndarray, logc: np.ndarray | None = None,
                start: np.ndarray | None = None, grad: bool = False):
    """Marginal log-likelihood of the binomial-normal model by adaptive Gauss-Hermite quadrature.

    logit p_i = mu + tau * u_i, u_i ~ N(0, 1); binomial coefficients included (``logc``, computed when not
    given). ``start`` is a first guess at the conditional modes (e.g. those of a nearby (mu, tau), which the
    optimiser's next evaluation usually is); the modes are solved to 1e-10 from wherever they start.

    With ``grad``, also the exact gradient of this quadrature approximation in (mu, tau): the derivative of
    each study's term through the nodes, which move with the conditional mode u* and the scale sigma
    (implicit differentiation of the mode equation; ``tests/test_freq_root.py`` checks it against central
    differences). It lets L-BFGS-B take one evaluation per step instead of three.

    Returns
    -------
    (float, ndarray) or (float, ndarray, ndarray)
        The log-likelihood and the conditional modes (pass them as ``start`` to the next evaluation), and with
        ``grad`` the gradient (d/dmu, d/dtau).
    """
    if logc is None:
        logc = _log_binom(ni, xi)

    def h(u):  # u has shape (k, nodes)
        eta = mu + tau * u
        return xi[:, None] * eta - ni[:, None] * np.logaddexp(0.0, eta) - 0.5 * u**2

    # Conditional modes: g(u) = tau (x - n expit(mu + tau u)) - u is strictly decreasing, with its root in
    # [tau (x - n), tau x]; safeguarded Newton (bisection whenever Newton leaves the bracket).
    lo = tau * (xi - ni)
    hi = tau * xi
    u = np.clip(np.zeros_like(xi) if start is None else start, lo, hi)
    for _ in range(200):
        p = _expit_array(mu + tau * u)
        g = tau * (xi - ni * p) - u
        lo = np.where(g > 0, u, lo)
        hi = np.where(g < 0, u, hi)
        hess = -(tau**2) * ni * p * (1 - p) - 1
        newton = u - g / hess
        outside = (newton <= lo) | (newton >= hi)
        u_new = np.where(outside, 0.5 * (lo + hi), newton)
        if np.max(np.abs(u_new - u)) < 1e-10:  # an error e in u changes h by O(e^2)
            u = u_new
            break
        u = u_new
    p = _expit_array(mu + tau * u)
    sig = 1 / np.sqrt(tau**2 * ni * p * (1 - p) + 1)
    z = u[:, None] + math.sqrt(2) * sig[:, None] * nodes[None, :]
    vals = h(z) + nodes[None, :] ** 2
    m = vals.max(axis=1, keepdims=True)
    wexp = weights[None, :] * np.exp(vals - m)
    integ = np.log(np.sum(wexp, axis=1)) + m[:, 0]
    li = logc + integ + np.log(math.sqrt(2) * sig) - 0.5 * math.log(2 * math.pi)
    if not grad:
        return float(np.sum(li)), u
    # d/dtheta of log sum_j w_j exp(h(z_j) + x_j^2) + log sigma, with z_j = u* + sqrt(2) sigma x_j
    q = p * (1 - p)
    s2 = sig**2
    du = np.stack([-tau * ni * q * s2, s2 * ((xi - ni * p) - tau * ni * q * u)])  # du*/d(mu, tau)
    deta = np.stack([1 + tau * du[0], u + tau * du[1]])  # d(mu + tau u*)/d(mu, tau)
    dD = np.stack([tau**2 * ni * q * (1 - 2 * p) * deta[0],
                   2 * tau * ni * q + tau**2 * ni * q * (1 - 2 * p) * deta[1]])  # D = 1/sigma^2
    dsig = -0.5 * sig**3 * dD
    pz = _expit_array(mu + tau * z)
    resid = xi[:, None] - ni[:, None] * pz  # dh/d(eta) at the nodes
    hprime = tau * resid - z
    post = wexp / wexp.sum(axis=1, keepdims=True)
    out = np.empty(2)
    for a, dh in enumerate((resid, z * resid)):  # dh/dmu, dh/dtau at fixed z
        dz = du[a][:, None] + math.sqrt(2) * dsig[a][:, None] * nodes[None, :]
        out[a] = np.sum(np.sum(post * (dh + hprime * dz), axis=1) + dsig[a] / sig)
    return float(np.sum(li)), u, out


def _numeric_hessian(f, x: np.ndarray, rel: float = 1e-4) -> np.ndarray:
    n = len(x)
    h = rel * np.maximum(np.abs(x), 1e-2)
    H = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            ei = np.zeros(n)
            ej = np.zeros(n)
            ei[i] = h[i]
            ej[j] = h[j]
            val = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (4 * h[i] * h[j])
            H[i, j] = H[j, i] = val
    return H


def _box_newton(fg, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray, *, max_iter: int = 200,
                tol: float = 1e-11) -> tuple[np.ndarray, float]:
    """Minimise a smooth function of a few parameters within bounds: projected Newton steps with the Hessian by
    forward differences of the exact gradient (backward at an upper bound), Levenberg damping where
    it is not positive definite, a backtracking (Armijo) line search, and bounds that bind held fixed (a
    parameter at its bound whose gradient pushes outward). ``fg(x)`` returns ``(f, gradient)``.

    It replaces scipy.optimize's L-BFGS-B in the binomial-normal GLMM (the only optimiser ``rescuemeta check``
    needs; importing scipy.optimize and scipy.special took 0.4-0.5 s of its ~2 s): Newton converges
    quadratically to the same optimum, checked against metafor's ``rma.glmm`` in ``tests/test_freq*.py``.

    Returns
    -------
    (ndarray, float)
        The minimiser and the function's value there.
    """
    n = len(x0)
    x = np.clip(np.asarray(x0, dtype=float), lo, hi)
    f, g = fg(x)
    for _ in range(max_iter):
        h = 1e-5 * np.maximum(np.abs(x), 1e-2)
        H = np.empty((n, n))
        for i in range(n):
            e = np.zeros(n)
            e[i] = h[i]
            if x[i] + h[i] <= hi[i]:
                H[i] = (fg(x + e)[1] - g) / h[i]
            else:
                H[i] = (g - fg(x - e)[1]) / h[i]
        H = 0.5 * (H + H.T)
        # a bound holds a coordinate when the gradient pushes it outward and the curvature does not turn it back
        # (at tau = 0 the GLMM's gradient in tau vanishes by symmetry: a negative curvature there means that
        # the optimum is inside)
        diag = np.diag(H)
        fixed = (((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0))) & (diag > 0)
        free = ~fixed
        d = np.zeros(n)
        if free.any():
            Hf, gf = H[np.ix_(free, free)], g[free]
            lam, V = np.linalg.eigh(Hf)
            scale = max(1.0, float(np.max(np.abs(lam))))
            # Newton where the Hessian is positive definite; else its eigenvalues by their absolute values
            # (saddle-free Newton) plus a step along the most negative curvature, downhill, or inward from a
            # bound where the gradient is flat
            lam_abs = np.maximum(np.abs(lam), 1e-10 * scale)
            df = -V @ ((V.T @ gf) / lam_abs)
            if lam[0] < -1e-10 * scale:
                v = V[:, 0]
                slope = float(gf @ v)
                if abs(slope) > 1e-12 * max(1.0, float(np.max(np.abs(gf)))):
                    v = -np.sign(slope) * v
                else:
                    xf, lof, hif = x[free], lo[free], hi[free]
                    inward = np.where(xf <= lof, 1.0, np.where(xf >= hif, -1.0, 0.0))
                    v = v if float(inward @ v) >= 0 else -v
                df = df + v  # a unit step (the line search shortens it)
            d[free] = df
        if not np.all(np.isfinite(d)) or not d.any():
            break
        t = 1.0
        moved = False
        while t > 1e-14:
            xn = np.clip(x + t * d, lo, hi)
            fn, gn = fg(xn)
            if np.isfinite(fn) and fn <= f + 1e-4 * float(g @ (xn - x)):
                moved = True
                break
            t *= 0.5
        if not moved:
            break
        step = np.max(np.abs(xn - x))
        x, f, g = xn, fn, gn
        if step < tol * max(1.0, float(np.max(np.abs(x)))):
            break
    return x, float(f)


def rma_glmm_plo(xi, ni, *, n_agq: int = 7, level: float = 0.95) -> FreqResult:
    """Random-intercept logistic model for single-arm proportions, by maximum likelihood (metafor
    ``rma.glmm(measure="PLO", method="ML")``, which fits it with ``lme4::glmer(nAGQ=7)``).

    Returns
    -------
    FreqResult
        ``estimate`` is the pooled logit proportion (``natural`` gives expit), ``tau2`` the variance of
        the study logits. The standard error comes from the observed information (the inverse Hessian
        of the log-likelihood in (mu, tau)), as lme4 computes it. ``q`` is None.
    """
    xi = np.asarray(xi, dtype=float)
    ni = np.asarray(ni, dtype=float)
    k = len(xi)
    # the cases metafor/lme4 refuse: the ML estimate does not exist or tau is not identified
    if k < 2:
        raise NotEstimable("the GLMM needs at least 2 studies (with one, mu and tau are not both estimable)")
    if np.all(xi == 0) or np.all(xi == ni):
        raise NotEstimable("every study has " + ("no events" if np.all(xi == 0) else "only events")
                         + ": the ML pooled logit is infinite; use the Bayesian proportion model or PLO with a "
                           "continuity correction")
    nodes, weights = np.polynomial.hermite.hermgauss(n_agq)

    logc = _log_binom(ni, xi)
    modes = [None]  # the last evaluation's conditional modes: a warm start for the next one

    def nll(par):
        ll, modes[0] = _agq_loglik(par[0], abs(par[1]), xi, ni, nodes, weights, logc, modes[0])
        return -ll

    def nll_grad(par):  # tau enters as |par[1]|; the bounds keep par[1] >= 0
        ll, modes[0], g = _agq_loglik(par[0], abs(par[1]), xi, ni, nodes, weights, logc, modes[0], grad=True)
        return -ll, -g

    es = escalc("PLO", xi, ni)
    iv = rma_iv(es.yi, es.vi, method="DL", measure="PLO")
    lo, hi = np.array([-30.0, 0.0]), np.array([30.0, 20.0])
    # from the DL estimate, then from a large and a small tau (insurance against a second local optimum); when
    # the first two agree, the third is skipped
    results: list[tuple[float, np.ndarray]] = []
    for tau0 in (math.sqrt(iv.tau2) if iv.tau2 > 0 else 0.3, 1.0, 0.05):
        x, f = _box_newton(nll_grad, np.array([iv.estimate, tau0]), lo, hi)
        results.append((f, x))
        if len(results) == 2 and abs(results[0][0] - results[1][0]) <= 1e-10 * max(1.0, abs(f)) \
                and np.allclose(results[0][1], results[1][1], rtol=1e-6, atol=1e-6):
            break
    x = min(results, key=lambda r: r[0])[1]
    mu, tau = float(x[0]), float(abs(x[1]))
    notes = []
    if tau > 1e-4:
        H = _numeric_hessian(nll, np.array([mu, tau]))
        cov = np.linalg.inv(H)
        se = float(math.sqrt(cov[0, 0]))
    else:
        tau = 0.0
        notes.append("tau estimated at the boundary 0")
        H = _numeric_hessian(lambda m: nll(np.array([m[0], 0.0])), np.array([mu]))
        se = float(math.sqrt(1 / H[0, 0]))
    tau2 = tau**2
    crit = _crit(level, None)
    w0 = 1 / es.vi[es.usable]
    ky = len(w0)
    vt = (ky - 1) / (np.sum(w0) - np.sum(w0**2) / np.sum(w0)) if ky > 1 else np.nan
    i2 = float(100 * tau2 / (vt + tau2)) if ky > 1 else 0.0
    pse = math.sqrt(se**2 + tau2)
    return FreqResult(measure="PLO", method="GLMM", hksj=False, estimate=mu, se=se,
                      ci_low=mu - crit * se, ci_high=mu + crit * se,
                      pval=norm_sf2(mu / se), tau2=tau2, i2=i2, q=None, k=k,
                      pi_low=mu - crit * pse, pi_high=mu + crit * pse, level=level, notes=notes)


# ---------------------------------------------------------------------------------------------------
# Dispatcher
# ---------------------------------------------------------------------------------------------------

def meta_analyze(measure: str, method: str, ai, n1i, ci=None, n2i=None, *, hksj: bool = False,
                 cc: ContinuityCorrection = ContinuityCorrection(), level: float = 0.95) -> FreqResult:
    """Pool counts with any supported measure and method.

    Parameters
    ----------
    measure : {"OR", "RR", "RD", "PLO"}
    method : {"DL", "REML", "PM", "MH", "PETO", "GLMM"}
        ``MH`` needs OR/RR/RD, ``PETO`` needs OR, ``GLMM`` needs PLO.
    ai, n1i, ci, n2i : array_like
        Events and totals (treatment, control); ``ci``/``n2i`` unused for PLO.
    hksj : bool
        Hartung-Knapp-Sidik-Jonkman adjustment (DL/REML/PM only).
    cc : ContinuityCorrection
        Zero-cell handling for the inverse-variance methods.

    Returns
    -------
    FreqResult
    """
    method = method.upper()
    measure = measure.upper()
    if method not in METHODS:
        raise NotEstimable(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if hksj and method not in ("DL", "REML", "PM"):
        raise NotEstimable(f"--hksj applies to DL, REML and PM, not {method}")
    if measure == "PLO":
        if method in ("MH", "PETO"):
            raise NotEstimable(f"{method} is a two-arm method; use DL, REML, PM or GLMM for PLO")
        if method == "GLMM":
            return rma_glmm_plo(ai, n1i, level=level)
        es = escalc("PLO", ai, n1i, cc=cc)
        return _with_dropped(rma_iv(es.yi, es.vi, method=method, hksj=hksj, level=level, measure="PLO"), es)
    if method == "GLMM":
        raise NotEstimable("GLMM is implemented for single-arm proportions (PLO) only")
    if method == "MH":
        return rma_mh(ai, n1i, ci, n2i, measure=measure, level=level)
    if method == "PETO":
        if measure != "OR":
            raise NotEstimable("Peto's method estimates an odds ratio: use --measure OR")
        return rma_peto(ai, n1i, ci, n2i, level=level)
    es = escalc(measure, ai, n1i, ci, n2i, cc=cc)
    return _with_dropped(rma_iv(es.yi, es.vi, method=method, hksj=hksj, level=level, measure=measure), es)


def _with_dropped(res: FreqResult, es) -> FreqResult:
    n_drop = int((~es.usable).sum())
    if n_drop:
        res.notes.append(f"{n_drop} stud{'y' if n_drop == 1 else 'ies'} without a finite estimate "
                         "(double-zero or uncorrected zero cell) left out")
    return res
