"""The meta-regression stage (frequentist side): moderators taken from columns of the study table, a
random-effects meta-regression as metafor's ``rma(yi, vi, mods = ~ ..., method, test)`` computes it, and
subgroup analyses with the test for subgroup differences as the R package meta reports it by default.

* :func:`design`: the design matrix. Numeric columns enter as they are; text columns with R's treatment
  coding, the first level (sorted) the reference, coefficients named ``COL[level]``; the intercept is
  ``intrcpt``. Studies without a value of a moderator are left out (as metafor's ``na.action = "na.omit"``)
  and named in the notes.
* :func:`rma_mods`: weighted least squares at tau^2 from DL, REML or PM (the residual heterogeneity), Wald z
  tests or Knapp-Hartung t/F tests (``hksj``; metafor ``test = "knha"``), the omnibus test of the moderators
  ``QM``, the test for residual heterogeneity ``QE``, metafor's pseudo-R^2 and I^2.
* :func:`subgroups`: a separate random-effects fit per level, each with its own tau^2 (meta's default
  ``tau.common = FALSE``), and Q_between = sum_g w_g (b_g - b_bar)^2 with w_g = 1/se_g^2, df = levels - 1.

Everything is checked against metafor 3.8 (``validation/metafor_reference.R`` pins the values in
``tests/data/metafor_reference.json``; ``tests/test_metareg_metafor_parity.py``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import InputError, NotEstimable
from .freq import IV_METHODS, _crit, _pval, _root, _upper_bracket, rma_iv

__all__ = ["Design", "design", "RegressionResult", "rma_mods", "SubgroupResult", "subgroups", "tau2_mods"]


@dataclass(frozen=True)
class Design:
    """A design matrix over the studies that have every moderator.

    Attributes
    ----------
    X : ndarray (k, p)
        Column 0 is the intercept.
    names : list of str
        ``intrcpt``, then numeric columns by name and text columns as ``COL[level]`` (non-reference levels).
    keep : ndarray of bool
        Which of the input rows have every moderator (and enter the model).
    levels : dict
        Text columns: their levels, sorted, the first the reference.
    notes : list of str
    """

    X: np.ndarray
    names: list[str]
    keep: np.ndarray
    levels: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _numeric(values) -> np.ndarray | None:
    """The column as floats if every present value is a number (a numeric-looking string counts), else None."""
    out = []
    for v in values:
        if _is_missing(v):
            out.append(math.nan)
            continue
        if isinstance(v, bool):
            return None
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            return None
    return np.asarray(out, dtype=float)


def design(columns: dict[str, list], mods: list[str], study_ids: list[str] | None = None) -> Design:
    """Build the design matrix from moderator columns.

    Parameters
    ----------
    columns : dict
        Column name -> values, one per study (as the study table gives them).
    mods : list of str
        Moderator names, in the order their coefficients appear.
    study_ids : list of str, optional
        For the notes naming studies left out for a missing value.

    Returns
    -------
    Design
        InputError for an unknown column, a text column with one level among the studies kept, a column that
        is constant, or moderators that are collinear (the design is not of full column rank).
    """
    if not mods:
        raise InputError("no moderators given")
    n = len(next(iter(columns.values()))) if columns else 0
    missing_cols = [m for m in mods if m not in columns]
    if missing_cols:
        raise InputError(f"moderator {missing_cols[0]!r} is not a column of the study table; columns: "
                         + ", ".join(sorted(columns)))
    keep = np.ones(n, dtype=bool)
    for m in mods:
        keep &= np.array([not _is_missing(v) for v in columns[m]], dtype=bool)
    notes = []
    if not keep.all():
        ids = [s for s, k in zip(study_ids or [str(i + 1) for i in range(n)], keep) if not k]
        notes.append(f"left out for a missing moderator value: {', '.join(ids)}")
    cols, names, levels = [np.ones(int(keep.sum()))], ["intrcpt"], {}
    for m in mods:
        vals = [v for v, k in zip(columns[m], keep) if k]
        num = _numeric(vals)
        if num is not None:
            if np.ptp(num) == 0:
                raise InputError(f"moderator {m!r} is constant across the studies used ({num[0]:g})")
            cols.append(num)
            names.append(m)
            continue
        lv = sorted({str(v).strip() for v in vals})
        if len(lv) < 2:
            raise InputError(f"moderator {m!r} has one level among the studies used ({lv[0] if lv else 'none'})")
        levels[m] = lv
        for level in lv[1:]:
            cols.append(np.array([1.0 if str(v).strip() == level else 0.0 for v in vals]))
            names.append(f"{m}[{level}]")
    X = np.column_stack(cols)
    if X.shape[0] >= X.shape[1] and np.linalg.matrix_rank(X) < X.shape[1]:  # fewer studies: rma_mods says so
        raise InputError(f"the moderators {', '.join(mods)} are collinear among the {X.shape[0]} studies used: "
                         "some coefficients are not identifiable")
    return Design(X, names, keep, levels, notes)


# ---------------------------------------------------------------------------------------------------
# residual heterogeneity
# ---------------------------------------------------------------------------------------------------

def _wls(y, v, X, t2):
    """b, (X'WX)^-1 and P y, tr(P) for W = diag(1/(v + t2)), P = W - W X (X'WX)^-1 X'W."""
    w = 1 / (v + t2)
    xtwx = X.T @ (w[:, None] * X)
    inv = np.linalg.inv(xtwx)
    b = inv @ (X.T @ (w * y))
    r = y - X @ b
    py = w * r
    # tr(P) = sum w - tr((X'WX)^-1 X'W^2 X)
    tr_p = float(np.sum(w) - np.trace(inv @ (X.T @ ((w**2)[:, None] * X))))
    return b, inv, py, tr_p


def tau2_mods(y, v, X, method: str) -> float:
    """Residual heterogeneity tau^2 of a meta-regression (metafor ``rma`` with ``mods``).

    ``DL``: (QE - (k - p)) / tr(P0), P0 at tau^2 = 0, truncated at 0. ``REML``: root of the restricted score
    tr(P)/2 - y'PPy/2 (0 where the score at 0 is not positive). ``PM``: generalised residual Q(tau^2) = y'P y
    equal to k - p (0 where Q(0) <= k - p). ``EE``: 0.
    """
    k, p = X.shape
    if method == "EE" or k <= p:
        return 0.0
    if method == "DL":
        _, _, py, tr_p = _wls(y, v, X, 0.0)
        qe = float(np.sum(py**2 * v))  # y'P0 y = sum w r^2 with w = 1/v
        return max(0.0, (qe - (k - p)) / tr_p) if tr_p > 0 else 0.0
    if method == "REML":
        def score(t2):
            _, _, py, tr_p = _wls(y, v, X, t2)
            return float(np.sum(py**2) - tr_p)
        f = score
    elif method == "PM":
        def gq(t2):
            _, _, py, _ = _wls(y, v, X, t2)
            return float(np.sum(py**2 * (v + t2)) - (k - p))
        f = gq
    else:
        raise NotEstimable(f"unknown tau^2 method {method!r}; choose DL, REML or PM")
    if f(0.0) <= 0:
        return 0.0
    hi = _upper_bracket(f, 10 * float(np.var(y)) + 1.0)
    return _root(f, 0.0, hi)


# ---------------------------------------------------------------------------------------------------
# meta-regression
# ---------------------------------------------------------------------------------------------------

@dataclass
class RegressionResult:
    """A frequentist meta-regression (the ``freq --mods`` JSON).

    Attributes
    ----------
    coefficients : dict
        name -> {estimate, se, ci_low, ci_high, pval} on the analysis scale (log OR, log RR, RD, logit rate):
        ``intrcpt`` is the effect where every numeric moderator is 0 and every text moderator at its reference
        level; ``COL`` the change per unit of COL; ``COL[level]`` the difference from the reference level.
    tau2 : float
        Residual between-study variance (heterogeneity the moderators do not explain).
    qm, qm_df, qm_pval : float, int or tuple, float
        Omnibus test that every moderator coefficient is 0: chi^2 on p - 1 df, or with ``hksj`` an F statistic
        (QM / (p - 1)) on (p - 1, k - p) df as metafor's ``test = "knha"``.
    qe, qe_df, qe_pval : float, int, float
        Test for residual heterogeneity (chi^2 on k - p df).
    r2 : float or None
        Percent of tau^2 of the model without moderators that they account for (metafor's pseudo-R^2,
        truncated at 0); 0 where that tau^2 is 0 (as metafor), None for the common-effect model.
    i2 : float
        Residual I^2 in percent.
    k, p : int
        Studies used and coefficients.
    """

    measure: str
    method: str
    hksj: bool
    coefficients: dict
    tau2: float
    qm: float
    qm_df: int | tuple[int, int]
    qm_pval: float
    qe: float
    qe_df: int
    qe_pval: float
    r2: float | None
    i2: float
    k: int
    p: int
    level: float = 0.95
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["qm_df"] = list(self.qm_df) if isinstance(self.qm_df, tuple) else self.qm_df
        return d


def _chi2_sf(x: float, df: int) -> float:
    from scipy import special

    return float(special.chdtrc(df, x))


def _f_sf(x: float, df1: int, df2: int) -> float:
    from scipy import special

    return float(special.fdtrc(df1, df2, x))


def rma_mods(yi, vi, dsg: Design, *, method: str = "REML", hksj: bool = False, level: float = 0.95,
             measure: str = "OR") -> RegressionResult:
    """Random-effects meta-regression (metafor ``rma(yi, vi, mods = ~ ..., method = , test = )``).

    Parameters
    ----------
    yi, vi : array_like
        Estimates and sampling variances of the studies ``dsg`` keeps (``dsg.keep`` applied already).
    dsg : Design
    method : {"DL", "REML", "PM", "EE"}
    hksj : bool
        Knapp-Hartung: the coefficients' covariance times s^2 = y'Py / (k - p) (not truncated, as metafor),
        t tests on k - p df, and the F test of the moderators.

    Returns
    -------
    RegressionResult
    """
    y, v, X = np.asarray(yi, dtype=float), np.asarray(vi, dtype=float), dsg.X
    if method not in IV_METHODS:
        raise NotEstimable(f"unknown tau^2 method {method!r}; choose from {', '.join(IV_METHODS)}")
    if not (np.isfinite(y).all() and np.isfinite(v).all() and (v > 0).all()):
        raise NotEstimable("every study used needs a finite estimate and a positive variance")
    k, p = X.shape
    if k <= p:
        raise NotEstimable(f"{k} studies cannot estimate {p} coefficients ({', '.join(dsg.names)}): a "
                           "meta-regression needs more studies than coefficients")
    tau2 = tau2_mods(y, v, X, method)
    b, vb, py, _ = _wls(y, v, X, tau2)
    df = None
    if hksj:
        s2 = float(np.sum(py**2 * (v + tau2))) / (k - p)
        vb = vb * s2
        df = k - p
    se = np.sqrt(np.diag(vb))
    crit = _crit(level, df)
    coefs = {}
    for j, name in enumerate(dsg.names):
        z = b[j] / se[j]
        coefs[name] = {"estimate": float(b[j]), "se": float(se[j]), "ci_low": float(b[j] - crit * se[j]),
                       "ci_high": float(b[j] + crit * se[j]), "pval": _pval(float(z), df)}
    m = p - 1
    bm = b[1:]
    qm = float(bm @ np.linalg.solve(vb[1:, 1:], bm))
    qm_df: int | tuple[int, int]
    if hksj:
        qm = qm / m
        qm_df, qm_pval = (m, k - p), _f_sf(qm, m, k - p)
    else:
        qm_df, qm_pval = m, _chi2_sf(qm, m)
    _, _, py0, tr_p0 = _wls(y, v, X, 0.0)
    qe = float(np.sum(py0**2 * v))
    vt = (k - p) / tr_p0 if tr_p0 > 0 else 0.0
    i2 = float(100 * tau2 / (vt + tau2)) if (vt + tau2) > 0 else 0.0
    tau2_0 = rma_iv(y, v, method=method).tau2 if method != "EE" else 0.0
    # metafor reports 0 where the model without moderators has no heterogeneity to explain
    r2 = None if method == "EE" else 0.0 if tau2_0 <= 0 else float(max(0.0, 100 * (tau2_0 - tau2) / tau2_0))
    return RegressionResult(measure=measure, method=method, hksj=hksj, coefficients=coefs, tau2=float(tau2),
                            qm=qm, qm_df=qm_df, qm_pval=qm_pval, qe=qe, qe_df=k - p, qe_pval=_chi2_sf(qe, k - p),
                            r2=r2, i2=i2, k=k, p=p, level=level, notes=list(dsg.notes))


# ---------------------------------------------------------------------------------------------------
# subgroups
# ---------------------------------------------------------------------------------------------------

@dataclass
class SubgroupResult:
    """Separate random-effects fits per level and the test for subgroup differences.

    Attributes
    ----------
    subgroups : dict
        level -> {estimate, se, ci_low, ci_high, tau2, k} on the analysis scale; a level with one study has
        tau2 0 and that study's estimate (shown, not pooled).
    q_between, q_between_df, q_between_pval : float, int, float
        Q_between = sum_g (b_g - b_bar)^2 / se_g^2 with b_bar the inverse-variance mean of the b_g, on
        levels - 1 df (chi^2). A small p-value says the subgroups' pooled effects differ by more than their
        standard errors allow.
    """

    measure: str
    method: str
    hksj: bool
    column: str
    subgroups: dict
    q_between: float
    q_between_df: int
    q_between_pval: float
    level: float = 0.95
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def subgroups(yi, vi, groups, *, column: str, method: str = "REML", hksj: bool = False, level: float = 0.95,
              measure: str = "OR") -> SubgroupResult:
    """Random-effects pooling within each level of ``groups`` (own tau^2 each) and the Q test between them.

    Returns
    -------
    SubgroupResult
        InputError when fewer than two levels have a usable study.
    """
    y, v = np.asarray(yi, dtype=float), np.asarray(vi, dtype=float)
    g = np.array(["" if _is_missing(x) else str(x).strip() for x in groups], dtype=object)
    notes = []
    if (g == "").any():
        notes.append(f"{int((g == '').sum())} stud{'y' if (g == '').sum() == 1 else 'ies'} without a value of "
                     f"{column!r} left out")
    out = {}
    for lv in sorted(set(g) - {""}):
        sel = g == lv
        r = rma_iv(y[sel], v[sel], method=method, hksj=hksj and sel.sum() > 1, level=level, measure=measure)
        out[lv] = {"estimate": r.estimate, "se": r.se, "ci_low": r.ci_low, "ci_high": r.ci_high, "tau2": r.tau2,
                   "k": r.k, "pval": r.pval}
        if r.k == 1:
            notes.append(f"{column} = {lv}: a single study, shown, not pooled")
    if len(out) < 2:
        raise InputError(f"subgroups by {column!r} need at least two levels with a study; found "
                         f"{', '.join(out) or 'none'}")
    b = np.array([s["estimate"] for s in out.values()])
    w = 1 / np.array([s["se"] for s in out.values()]) ** 2
    bbar = float(np.sum(w * b) / np.sum(w))
    q = float(np.sum(w * (b - bbar) ** 2))
    df = len(out) - 1
    return SubgroupResult(measure=measure, method=method, hksj=hksj, column=column, subgroups=out, q_between=q,
                          q_between_df=df, q_between_pval=_chi2_sf(q, df), level=level, notes=notes)
