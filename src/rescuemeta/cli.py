"""Command-line interface (a thin layer over the pipeline modules).

Exit codes: 0 success, 2 bad input (a one-line message naming file, row and column; no traceback),
3 a sampling/convergence failure (Bayesian commands).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from . import __version__
from .check import ABSTRACT_K, DEFAULT_ABSTRACT, check as run_check, load_abstract
from .data import DEFAULT_DATA, load_studies, parse_exclude_basis, select
from .effects import CC_TARGETS, ContinuityCorrection
from .errors import EXIT_INPUT, InputError, RescueMetaError
from .freq import meta_analyze

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Meta-analysis of binary outcomes: rescue intracranial stenting and your own data.")
def _console(stderr: bool = False) -> Console:
    # a pipe or file gets 160 columns instead of rich's 80, so that the tables stay readable in logs
    c = Console(stderr=stderr, soft_wrap=True)
    if not c.is_terminal:
        c = Console(stderr=stderr, soft_wrap=True, width=160)
    return c


out = _console()
err = _console(stderr=True)

EVIDENCE_NOTE = (f"Evidence base: the studies in the data file (data/studies.csv: 20 studies compiled from "
                 f"abstracts), not the seed abstract's {ABSTRACT_K}; which of its studies overlap ours is unknown.")


class Measure(str, Enum):
    OR = "OR"
    RR = "RR"
    RD = "RD"
    PLO = "PLO"


class Method(str, Enum):
    DL = "DL"
    REML = "REML"
    PM = "PM"
    MH = "MH"
    PETO = "PETO"
    GLMM = "GLMM"


@contextlib.contextmanager
def guard():
    """Turn our errors into one-line messages and exit codes."""
    try:
        yield
    except RescueMetaError as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False, markup=True)
        raise typer.Exit(e.exit_code) from None
    except ValueError as e:  # invalid combinations caught by the engine
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        raise typer.Exit(EXIT_INPUT) from None


def _clean(o):
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (np.floating, float)):
        o = float(o)
        return o if math.isfinite(o) else None
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.bool_):
        return bool(o)
    return o


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(_clean(obj), indent=2, allow_nan=False) + "\n")


def _fmt(x, nd=3):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{nd}f}"


DataOpt = typer.Option(DEFAULT_DATA, "--data", help="Study table (CSV).", show_default=True)
AllStudiesOpt = typer.Option(False, "--all-studies", help="Do not deduplicate overlap groups.")
ExcludeOpt = typer.Option(None, "--exclude-basis",
                          help="Drop rows by count_basis, e.g. approximate,denominator_fitted.")


def version_callback(value: bool):
    if value:
        out.print(f"rescuemeta {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                       help="Show the version and exit.")):
    """rescuemeta: meta-analysis of binary outcomes."""


# ---------------------------------------------------------------------------------------------------
# freq
# ---------------------------------------------------------------------------------------------------

# the table `freq --all` prints: (measure, method) per analysis type
ALL_TWO_ARM = [("OR", "MH"), ("OR", "REML"), ("RR", "MH"), ("RR", "REML"), ("RD", "MH"), ("RD", "REML")]
ALL_ONE_ARM = [("PLO", "REML"), ("PLO", "GLMM")]


def _freq_row(table, outcome, measure, method, *, hksj, all_studies, exclude, cc):
    arms = "one" if measure == "PLO" else "two"
    sel = select(table, outcome, arms=arms, all_studies=all_studies, exclude_basis=exclude)
    ai, n1i, ci, n2i = sel.counts()
    res = meta_analyze(measure, method, ai, n1i, ci, n2i, hksj=hksj, cc=cc)
    d = res.to_dict()
    d["outcome"] = outcome
    d["inclusion"] = sel.describe()
    return d


@app.command()
def freq(
    data: Path = DataOpt,
    outcome: Optional[str] = typer.Option(None, "--outcome", help="Outcome to pool (see the data file)."),
    measure: Measure = typer.Option(Measure.OR, "--measure", help="OR, RR, RD (two-arm) or PLO (stent arm)."),
    method: Method = typer.Option(Method.REML, "--method", help="tau^2 estimator or pooling method."),
    hksj: bool = typer.Option(False, "--hksj", help="Hartung-Knapp-Sidik-Jonkman adjustment."),
    all_studies: bool = AllStudiesOpt,
    exclude_basis: Optional[str] = ExcludeOpt,
    cc_add: float = typer.Option(0.5, "--cc-add", help="Continuity correction added to zero-cell studies."),
    cc_to: str = typer.Option("only0", "--cc-to", help=f"Which studies get it: {', '.join(CC_TARGETS)}."),
    keep_double_zero: bool = typer.Option(False, "--keep-double-zero",
                                          help="Keep double-zero studies (metafor rma()'s default)."),
    all_outcomes: bool = typer.Option(False, "--all", help="A table of standard analyses for every outcome."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Frequentist pooled estimate (metafor-compatible)."""
    with guard():
        exclude = parse_exclude_basis(exclude_basis)
        try:
            cc = ContinuityCorrection(add=cc_add, to=cc_to, drop00=not keep_double_zero)
        except ValueError as e:
            raise InputError(str(e)) from None
        table = load_studies(data)
        if all_outcomes:
            rows = []
            for oc in table.outcomes:
                for arms, pairs in (("two", ALL_TWO_ARM), ("one", ALL_ONE_ARM)):
                    for meas, meth in pairs:
                        try:
                            rows.append(_freq_row(table, oc, meas, meth, hksj=False, all_studies=all_studies,
                                                  exclude=exclude, cc=cc))
                        except InputError as e:
                            rows.append({"outcome": oc, "measure": meas, "method": meth, "unavailable": e.message})
            if as_json:
                emit_json(rows)
            else:
                _print_freq_table(rows)
            return
        if outcome is None:
            raise InputError("--outcome is required (or use --all); outcomes in the file: "
                             + ", ".join(table.outcomes))
        d = _freq_row(table, outcome, measure.value, method.value, hksj=hksj, all_studies=all_studies,
                      exclude=exclude, cc=cc)
        if as_json:
            emit_json(d)
        else:
            _print_freq_table([d])


def _print_freq_table(rows):
    t = Table(title="Frequentist pooled estimates", caption=EVIDENCE_NOTE, caption_justify="left")
    for c in ["outcome", "measure", "method", "k", "estimate (natural)", "95% CI", "tau²", "I² %", "Q",
              "95% PI (natural)"]:
        t.add_column(c, justify="right" if c not in ("outcome", "measure", "method") else "left")
    for r in rows:
        if "unavailable" in r:
            t.add_row(r["outcome"], r["measure"], r["method"], "0", "—", r["unavailable"][:60], "", "", "", "")
            continue
        nat = r["natural"]
        f = (lambda x: math.exp(x)) if r["measure"] in ("OR", "RR") else (
            (lambda x: 1 / (1 + math.exp(-x))) if r["measure"] == "PLO" else (lambda x: x))
        pi = "—" if r["pi_low"] is None else f"{_fmt(f(r['pi_low']))} to {_fmt(f(r['pi_high']))}"
        t.add_row(r["outcome"], r["measure"] + (" (HKSJ)" if r["hksj"] else ""), r["method"], str(r["k"]),
                  _fmt(nat["estimate"]), f"{_fmt(nat['ci_low'])} to {_fmt(nat['ci_high'])}", _fmt(r["tau2"]),
                  _fmt(r["i2"], 1), _fmt(r["q"], 2), pi)
    out.print(t)
    if len(rows) == 1 and "inclusion" in rows[0]:
        inc = rows[0]["inclusion"]
        out.print(f"Inclusion: {inc['rule']}. Included: {', '.join(inc['included'])}.")
        if inc["excluded"]:
            out.print("Excluded: " + "; ".join(f"{x['study_id']} ({x['reason']})" for x in inc["excluded"]))
        for n in rows[0].get("notes", []):
            out.print(f"Note: {n}")


# ---------------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------------

@app.command()
def check(
    data: Path = DataOpt,
    abstract: Path = typer.Option(DEFAULT_ABSTRACT, "--abstract", help="The abstract's printed estimates."),
    all_studies: bool = AllStudiesOpt,
    exclude_basis: Optional[str] = ExcludeOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """The abstract's nine printed estimates next to our reproduction, and an audit of the printed numbers."""
    with guard():
        exclude = parse_exclude_basis(exclude_basis)
        table = load_studies(data)
        rows = run_check(table, load_abstract(abstract), all_studies=all_studies, exclude_basis=exclude)
        if as_json:
            emit_json(rows)
            return
        t = Table(title="The abstract's estimates against our reproduction", caption=EVIDENCE_NOTE,
                  caption_justify="left")
        for c in ["outcome", "quantity", "abstract (k=30)", "ours: method", "k", "ours", "ours/abstract",
                  "abstract in our CI"]:
            t.add_column(c)
        for r in rows:
            a = r["abstract"]
            abs_txt = f"{a['estimate']:g} ({a['ci_low']:g}–{a['ci_high']:g})" + (f" {a['p']}" if a["p"] else "")
            for i, rep in enumerate(r["reproductions"]):
                first = i == 0
                if not rep.get("available"):
                    cells = [rep["method"], str(rep.get("k", 0)), rep["reason"], "—", "—"]
                else:
                    cmp = (f"×{rep['ratio']:.2f}" if "ratio" in rep else f"{100 * rep['difference']:+.1f} pts")
                    cells = [f"{rep['measure']} {rep['method']}", str(rep["k"]),
                             f"{rep['estimate']:.3f} ({rep['ci_low']:.3f}–{rep['ci_high']:.3f})", cmp,
                             "yes" if rep["abstract_inside_our_ci"] else "[red]no[/]"]
                t.add_row(r["outcome"] if first else "", r["quantity"] if first else "", abs_txt if first else "",
                          *cells, end_section=i == len(r["reproductions"]) - 1)
        out.print(t)
        a = Table(title="Internal consistency of the printed numbers (allowing for rounding)",
                  show_lines=True)
        for c in ["outcome", "quantity", "printed", "CI midpoint", "p implied by CI", "flags"]:
            a.add_column(c)
        for r in rows:
            au = r["audit"]
            ab = r["abstract"]
            p_impl = "—" if au["implied_p"] is None else f"{au['implied_p']:.2g} (midpoint: {au['implied_p_midpoint']:.2g})"
            flags = "\n".join(f"[{'red' if f['severity'] == 'error' else 'yellow'}]{f['severity']}[/]: {f['message']}"
                              for f in au["flags"]) or "[green]consistent[/]"
            a.add_row(r["outcome"], r["quantity"], f"{ab['estimate']:g} ({ab['ci_low']:g}–{ab['ci_high']:g})"
                      + (f" {ab['p']}" if ab["p"] else ""), f"{au['midpoint']:.3g}", p_impl, flags)
        out.print(a)


def main():  # console-script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
