"""The check against published estimates: pooled estimates printed elsewhere (e.g. an abstract's) against our
reproduction from the study table, and an audit of the printed numbers' internal consistency.

When the study table is not the published meta-analysis's own set of studies (the number of studies it pooled
is in the estimates' description, :func:`rescuemeta.description.load_source`), the comparison tests whether our
set points the same way, not whether the published arithmetic can be reproduced exactly.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import Selection, StudyTable, select
from .defaults import Z975
from .description import SourceDescription
from .effects import ContinuityCorrection
from .errors import InputError
from .freq import FreqResult, expit, logit, meta_analyze, norm_sf2

__all__ = ["p_matches", "DEFAULT_ABSTRACT", "PUBLISHED_NAME", "load_published", "compare_published", "QUANTITIES",
           "REPRODUCTIONS", "PrintedEstimate", "load_abstract", "parse_p", "audit", "check"]

DEFAULT_ABSTRACT = Path("data/abstract_estimates.csv")
QUANTITIES = ("pooled_rate_treat", "RR", "OR", "RD")

# our reproduction of each kind of printed estimate: (measure, method) pairs
REPRODUCTIONS = {
    "pooled_rate_treat": [("PLO", "DL"), ("PLO", "GLMM")],
    "RR": [("RR", "MH"), ("RR", "DL")],
    "OR": [("OR", "MH"), ("OR", "DL")],
    "RD": [("RD", "MH"), ("RD", "DL")],
}


@dataclass
class PrintedEstimate:
    """One line of ``abstract_estimates.csv`` as printed (strings kept to know the printed precision)."""

    outcome: str
    quantity: str
    estimate: float
    ci_low: float
    ci_high: float
    p_text: str
    raw: dict

    def half_unit(self, field: str) -> float:
        """Half a unit in the last printed digit of ``field`` (the rounding error it may carry)."""
        s = self.raw[field].strip()
        dec = len(s.split(".")[1]) if "." in s else 0
        return 0.5 * 10.0 ** (-dec)


def load_abstract(path: str | Path = DEFAULT_ABSTRACT) -> list[PrintedEstimate]:
    """Read the abstract's printed estimates (columns outcome, quantity, estimate, ci_low, ci_high,
    p_value_as_printed)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file" if not path.exists() else "is not a file", file=path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("is not UTF-8 text", file=path) from None
    rows = list(csv.DictReader(text.splitlines()))
    if not rows:
        raise InputError("has no rows", file=path)
    need = ["outcome", "quantity", "estimate", "ci_low", "ci_high"]
    missing = [c for c in need if c not in rows[0]]
    if missing:
        raise InputError(f"missing column(s): {', '.join(missing)}", file=path, column=missing[0])
    out = []
    for i, r in enumerate(rows, start=1):
        if r["quantity"] not in QUANTITIES:
            raise InputError(f"unknown quantity {r['quantity']!r}; expected one of {', '.join(QUANTITIES)}",
                             file=path, row=i, line=i + 1, column="quantity")
        vals = {}
        for c in ("estimate", "ci_low", "ci_high"):
            try:
                vals[c] = float(r[c])
            except (TypeError, ValueError):
                raise InputError(f"not a number: {r[c]!r}", file=path, row=i, line=i + 1, column=c) from None
            if not math.isfinite(vals[c]) or vals[c] <= 0:
                raise InputError(f"must be a positive finite number, got {r[c]!r}", file=path, row=i,
                                 line=i + 1, column=c)
        out.append(PrintedEstimate(r["outcome"], r["quantity"], vals["estimate"], vals["ci_low"],
                                   vals["ci_high"], (r.get("p_value_as_printed") or "").strip(), r))
    return out


# ---------------------------------------------------------------------------------------------------
# Internal-consistency audit
# ---------------------------------------------------------------------------------------------------

_P_RE = re.compile(r"^\s*p\s*([<>=≤≥]=?)\s*([0-9.eE-]+)\s*$", re.IGNORECASE)


def parse_p(text: str) -> tuple[str, float] | None:
    """``"P < 0.0002"`` -> ``("<", 0.0002)``; None when empty or unreadable."""
    m = _P_RE.match(text or "")
    if not m:
        return None
    op = {"≤": "<=", "≥": ">=", "<=": "<=", ">=": ">="}.get(m.group(1), m.group(1))
    return op, float(m.group(2))


def p_matches(p: float, p_text: str) -> bool | None:
    """Whether a computed p-value agrees with a printed one (``"P = 0.04"`` allows the printed rounding,
    ``"P < 0.001"`` the bound); None when nothing readable is printed."""
    parsed = parse_p(p_text)
    if parsed is None:
        return None
    op, val = parsed
    if op == "=":
        return abs(p - val) <= 0.5 * 10 ** _decimals_exp(p_text)
    return {"<": p < val, "<=": p <= val, ">": p > val, ">=": p >= val}[op]


def _scale(e: PrintedEstimate):
    """Transform to the scale on which a normal-theory CI is symmetric (log for ratios, logit for rates)."""
    if e.quantity in ("RR", "OR"):
        return math.log, 0.0  # null value on that scale
    if e.quantity == "pooled_rate_treat":
        return logit, None
    return (lambda x: x), 0.0


def _corners(e: PrintedEstimate):
    he, hl, hh = e.half_unit("estimate"), e.half_unit("ci_low"), e.half_unit("ci_high")
    for de in (-he, 0.0, he):
        for dl in (-hl, 0.0, hl):
            for dh in (-hh, 0.0, hh):
                est, lo, hi = e.estimate + de, e.ci_low + dl, e.ci_high + dh
                if lo > 0 and hi > lo and est > 0 and (e.quantity != "pooled_rate_treat" or hi < 1):
                    yield est, lo, hi


def audit(e: PrintedEstimate) -> dict:
    """Check one printed estimate for internal consistency, allowing for rounding to the printed digits.

    Returns
    -------
    dict
        ``flags``: list of ``{severity, check, message}`` (severity ``error`` for impossible numbers,
        ``warning`` for numbers a normal-theory CI cannot produce even after rounding); ``implied_p``
        (from the estimate and the CI's width) and ``implied_p_midpoint`` (from the CI alone, its
        geometric/logit midpoint as the estimate); ``midpoint`` on the natural scale.
    """
    f, null = _scale(e)
    flags = []
    if not (e.ci_low < e.estimate < e.ci_high):
        where = "equals a CI limit" if e.estimate in (e.ci_low, e.ci_high) else "lies outside its CI"
        flags.append({"severity": "error", "check": "estimate_in_ci",
                      "message": f"point estimate {e.estimate:g} {where} ({e.ci_low:g} to {e.ci_high:g})"})
    lo_t, hi_t = f(e.ci_low), f(e.ci_high)
    mid_t = (lo_t + hi_t) / 2
    inv = math.exp if e.quantity in ("RR", "OR") else (expit if null is None else (lambda x: x))
    midpoint = float(inv(mid_t))
    # can some unrounded (est, lo, hi) that rounds to the printed digits be exactly symmetric?
    gaps = [f(est) - (f(lo) + f(hi)) / 2 for est, lo, hi in _corners(e)]
    symmetric_possible = bool(gaps) and min(gaps) <= 0 <= max(gaps)
    if not symmetric_possible:
        kind = "geometric" if e.quantity in ("RR", "OR") else ("logit-scale" if null is None else "")
        flags.append({"severity": "warning", "check": "ci_symmetry",
                      "message": f"estimate {e.estimate:g} is not at the {kind} midpoint {midpoint:.3g} of "
                                 f"its CI, even allowing for rounding"})
    out: dict[str, Any] = {"midpoint": midpoint, "implied_p": None, "implied_p_midpoint": None, "printed_p": e.p_text or None}
    if null is not None:
        se = (hi_t - lo_t) / (2 * Z975)
        out["implied_p"] = norm_sf2((f(e.estimate) - null) / se)
        out["implied_p_midpoint"] = norm_sf2((mid_t - null) / se)
        ps = []
        for est, lo, hi in _corners(e):
            s = (f(hi) - f(lo)) / (2 * Z975)
            ps.append(norm_sf2((f(est) - null) / s))
        p_min, p_max = min(ps), max(ps)
        significant = not (e.ci_low <= (1.0 if e.quantity in ("RR", "OR") else 0.0) <= e.ci_high)
        parsed = parse_p(e.p_text)
        if e.p_text and parsed is None:
            flags.append({"severity": "warning", "check": "p_value",
                          "message": f"printed p-value {e.p_text!r} cannot be read"})
        elif parsed:
            op, val = parsed
            impossible = op.startswith(">") and significant
            if impossible:
                flags.append({"severity": "error", "check": "p_value",
                              "message": f"'{e.p_text}' says p is larger than {val:g}, an impossible way to "
                                         f"report a result whose CI excludes the null (implied p "
                                         f"{out['implied_p']:.2g}); probably a typo for '<'"})
            coherent = {
                "<": p_min < val, "<=": p_min <= val, ">": p_max > val, ">=": p_max >= val,
                "=": p_min - 0.5 * 10 ** _decimals_exp(e.p_text) <= val <= p_max + 0.5 * 10 ** _decimals_exp(e.p_text),
            }[op]
            if not coherent and not impossible:
                flags.append({"severity": "warning", "check": "p_value",
                              "message": f"printed '{e.p_text}' does not match the p-value its CI implies "
                                         f"({out['implied_p']:.2g}; {out['implied_p_midpoint']:.2g} from the CI "
                                         f"midpoint), even allowing for rounding"})
    out["flags"] = flags
    return out


def _decimals_exp(p_text: str) -> int:
    m = re.search(r"([0-9]*\.([0-9]+))", p_text)
    return -len(m.group(2)) if m else 0


# ---------------------------------------------------------------------------------------------------
# Reproduction
# ---------------------------------------------------------------------------------------------------

def _natural(res: FreqResult) -> dict:
    return res.natural


def check(table: StudyTable, estimates: list[PrintedEstimate], *, all_studies: bool = False,
          exclude_basis: tuple[str, ...] = (), source: SourceDescription | None = None) -> list[dict]:
    """Reproduce each printed estimate from the study table and audit it.

    Returns
    -------
    list of dict
        One per printed estimate: the printed numbers (``abstract``), ``k_abstract`` (how many studies they
        pooled, from ``source``; null when not described), ``source`` (its label),
        ``reproductions`` (one per method: ``estimate``/``ci_low``/``ci_high`` on the natural scale, ``k``,
        ``rule``, ``ratio`` ours/abstract for ratios or ``difference`` ours - abstract for rates, and
        ``abstract_inside_our_ci``), and ``audit`` (see :func:`audit`). A reproduction that the data cannot
        support carries ``available: false`` and a ``reason``.
    """
    rows = []
    selections: dict[tuple[str, str], Selection] = {}
    refused: dict[tuple[str, str], InputError] = {}  # several estimates share one selection

    def selection(outcome: str, arms: str) -> Selection:
        key = (outcome, arms)
        if key not in selections and key not in refused:
            try:
                selections[key] = select(table, outcome, arms=arms, all_studies=all_studies,
                                         exclude_basis=exclude_basis)
            except InputError as err:
                refused[key] = err
        if key in refused:
            raise refused[key]
        return selections[key]

    for e in estimates:
        item: dict[str, Any] = {"outcome": e.outcome, "quantity": e.quantity,
                "abstract": {"estimate": e.estimate, "ci_low": e.ci_low, "ci_high": e.ci_high,
                             "p": e.p_text or None},
                "k_abstract": source.k if source is not None else None,
                "source": source.label if source is not None else None, "reproductions": [], "audit": audit(e)}
        for measure, method in REPRODUCTIONS[e.quantity]:
            rep: dict[str, Any] = {"measure": measure, "method": method}
            arms = "one" if measure == "PLO" else "two"
            try:
                sel = selection(e.outcome, arms)
            except InputError as err:
                rep.update(available=False, reason="no control-arm data for this outcome" if arms == "two"
                           else err.message)
                item["reproductions"].append(rep)
                continue
            ai, n1i, ci, n2i = sel.counts()
            try:
                res = meta_analyze(measure, method, ai, n1i, ci, n2i, cc=ContinuityCorrection())
            except ValueError as err:
                rep.update(available=False, reason=str(err), k=sel.k)
                item["reproductions"].append(rep)
                continue
            nat = _natural(res)
            rep.update(available=True, k=res.k, rule=sel.rule, studies=sel.study_ids, **nat,
                       tau2=res.tau2, i2=res.i2,
                       abstract_inside_our_ci=bool(nat["ci_low"] <= e.estimate <= nat["ci_high"]))
            if measure == "PLO" or measure == "RD":
                rep["difference"] = nat["estimate"] - e.estimate
            else:
                rep["ratio"] = nat["estimate"] / e.estimate
            item["reproductions"].append(rep)
        rows.append(item)
    return rows


# ---------------------------------------------------------------------------------------------------
# Published meta-analyses as comparators
# ---------------------------------------------------------------------------------------------------

PUBLISHED_NAME = "published_meta_analyses.csv"  # looked for beside the study table


def load_published(path: str | Path) -> list[dict]:
    """Other published meta-analyses' pooled ratios (columns source_id, outcome, quantity (OR or RR), estimate,
    ci_low, ci_high (may be empty where the source cuts them off), k, n_patients, caveat, citation, url, quote).

    Raises InputError naming file, row and column."""
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file" if not path.exists() else "is not a file", file=path)
    rows = list(csv.DictReader(path.read_text(encoding="utf-8-sig").splitlines()))
    need = ["source_id", "outcome", "quantity", "estimate", "ci_low", "ci_high", "k", "quote", "url"]
    missing = [c for c in need if not rows or c not in rows[0]]
    if missing:
        raise InputError(f"missing column(s): {', '.join(missing)}", file=path, column=missing[0])
    out = []
    for i, r in enumerate(rows, start=1):
        def num(c, required, integer=False, r=r, i=i):
            v = (r.get(c) or "").strip()
            if not v:
                if required:
                    raise InputError("must not be empty", file=path, row=i, line=i + 1, column=c)
                return None
            try:
                x = int(v) if integer else float(v)
            except ValueError:
                raise InputError(f"not a {'whole ' if integer else ''}number: {v!r}", file=path, row=i, line=i + 1,
                                 column=c) from None
            if not x > 0:
                raise InputError(f"must be > 0, got {v!r}", file=path, row=i, line=i + 1, column=c)
            return x
        if r["quantity"] not in ("OR", "RR"):
            raise InputError(f"quantity must be OR or RR, got {r['quantity']!r}", file=path, row=i, line=i + 1,
                             column="quantity")
        if not r["quote"].strip():
            raise InputError("must not be empty (every number needs its source sentence)", file=path, row=i,
                             line=i + 1, column="quote")
        lo, hi = num("ci_low", False), num("ci_high", False)
        if (lo is None) != (hi is None):
            raise InputError("ci_low and ci_high go together", file=path, row=i, line=i + 1,
                             column="ci_high" if hi is None else "ci_low")
        out.append({"source_id": r["source_id"], "outcome": r["outcome"], "quantity": r["quantity"],
                    "estimate": num("estimate", True), "ci_low": lo, "ci_high": hi, "k": num("k", True, True),
                    "n_patients": num("n_patients", False, True) if "n_patients" in r else None,
                    "caveat": (r.get("caveat") or "").strip() or None, "citation": (r.get("citation") or "").strip(),
                    "url": r["url"].strip(), "quote": r["quote"].strip()})
    return out


def compare_published(table: StudyTable, published: list[dict], *, all_studies: bool = False,
                      exclude_basis: tuple[str, ...] = ()) -> list[dict]:
    """Each published pooled ratio beside ours: the DerSimonian-Laird estimate on our rows for the same
    outcome and measure (reported estimates as rma(yi, sei) rows, counts otherwise), with both k.

    Returns
    -------
    list of dict
        The published row plus ``ours`` (estimate, ci_low, ci_high, k, k_reported; or ``unavailable`` with the
        reason) and ``ratio`` ours / published.
    """
    from .freq import rma_iv

    out = []
    for p in published:
        row = dict(p)
        if p["outcome"] not in set(table.frame["outcome"]):
            row["ours"] = {"unavailable": f"outcome {p['outcome']!r} is not in the study table"}
            out.append(row)
            continue
        try:
            sel = select(table, p["outcome"], arms="two", all_studies=all_studies, exclude_basis=exclude_basis,
                         effects="reported", measure=p["quantity"])
        except InputError as err:
            row["ours"] = {"unavailable": err.message}
            out.append(row)
            continue
        yi, vi, rep = sel.effect_sizes(p["quantity"], ContinuityCorrection())
        res = rma_iv(yi, vi, method="DL", measure=p["quantity"])
        nat = res.natural
        row["ours"] = {**nat, "k": res.k, "k_reported": int(rep.sum()), "method": "DL"}
        row["ratio"] = nat["estimate"] / p["estimate"]
        out.append(row)
    return out


from . import _callable_module  # noqa: E402

_callable_module(__name__, "check")
