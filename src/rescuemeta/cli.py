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
from types import SimpleNamespace

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Only light modules at the top: --help, --version, check and freq must not load PyMC, ArviZ, numba or
# matplotlib (tests/test_cli_startup.py). The Bayesian commands import them when they run.
from ._version import __version__
from .atomic import ensure_dir, to_jsonable, write_text
from .description import load_source
from .effects import CC_TARGETS, ContinuityCorrection
from .errors import EXIT_CONVERGENCE, ConvergenceError, InputError, RescueMetaError
from .kinds import MODEL_KINDS
from .priors import DEFAULT_BASELINE_PRIOR, DEFAULT_EFFECT_PRIOR

__all__ = ["app", "main"]

DEFAULT_DATA = Path("data/studies.csv")
DEFAULT_ABSTRACT = Path("data/abstract_estimates.csv")


def _default_exists(path: Path, default: Path, option: str) -> None:
    """A default path is relative to the working directory: when it is not there, say which option to pass."""
    if Path(path) == default and not Path(path).exists():
        raise InputError(f"no such file in the working directory ({Path.cwd()}); the default {default} is "
                         f"relative to it: pass {option} FILE", file=path)


# pandas, pandera and scipy load when a command reads data, not for --help or --version
def load_studies(path, *args, **kwargs):
    from .data import load_studies as f

    _default_exists(path, DEFAULT_DATA, "--data")
    return f(path, *args, **kwargs)


def select(*args, **kwargs):
    from .data import select as f

    return f(*args, **kwargs)


def parse_exclude_basis(*args, **kwargs):
    from .data import parse_exclude_basis as f

    return f(*args, **kwargs)


def meta_analyze(*args, **kwargs):
    from .freq import meta_analyze as f

    return f(*args, **kwargs)


def run_check(*args, **kwargs):
    from .check import check as f

    return f(*args, **kwargs)


def load_abstract(path, *args, **kwargs):
    from .check import load_abstract as f

    _default_exists(path, DEFAULT_ABSTRACT, "--abstract")
    return f(path, *args, **kwargs)


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Bayesian and frequentist meta-analysis of binary outcomes.")
def _console(stderr: bool = False) -> Console:
    # a pipe or file gets 160 columns instead of rich's 80, so that the tables stay readable in logs
    c = Console(stderr=stderr, soft_wrap=True)
    if not c.is_terminal:
        c = Console(stderr=stderr, soft_wrap=True, width=160)
    return c


out = _console()
err = _console(stderr=True)



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
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, markup=True)
        diag = getattr(e, "diagnostics", None)
        if diag:
            err.print("diagnostics: " + json.dumps(_clean(diag)), highlight=False, markup=False)
        raise typer.Exit(e.exit_code) from None


def _clean(o):
    return to_jsonable(o)


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(_clean(obj), indent=2, allow_nan=False, ensure_ascii=False) + "\n")


def _fmt(x, nd=3):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    return f"{x:.{nd}f}"


DataOpt = typer.Option(DEFAULT_DATA, "--data", help="Study table (CSV).", show_default=True)
AllStudiesOpt = typer.Option(False, "--all-studies", help="Do not deduplicate overlap groups.")
BiasPriorOpt = typer.Option(None, "--bias-prior", help="normal(m, s): an additive bias on the log ratio of every "
                            "non-randomised row (normal model; see `rescuemeta bias-priors`).")
CountsOnlyOpt = typer.Option(False, "--counts-only", help="Use counts only: leave out rows' reported (e.g. "
                             "adjusted) estimates; rows with an estimate and no counts drop out.")
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


IV_METHODS = ("DL", "REML", "PM", "EE")


def _freq_row(table, outcome, measure, method, *, hksj, all_studies, exclude, cc, counts_only=False):
    """One frequentist analysis. Rows' reported estimates (OR/RR) enter the inverse-variance methods as
    metafor's ``rma(yi, sei = ...)`` rows; MH, Peto and the GLMM use counts only (and say so)."""
    import numpy as np

    from .freq import rma_iv, study_rows, study_table

    arms = "one" if measure == "PLO" else "two"
    reported = not counts_only and arms == "two" and measure in ("OR", "RR") and method in IV_METHODS
    sel = select(table, outcome, arms=arms, all_studies=all_studies, exclude_basis=exclude,
                 effects="reported" if reported else "counts", measure=measure if reported else None)
    ai, n1i, ci, n2i = sel.counts()
    if sel.reported.any():
        yi, vi, _ = sel.effect_sizes(measure, cc)
        res = rma_iv(yi, vi, method=method, hksj=hksj, measure=measure)
        n_drop = int((~(np.isfinite(yi) & np.isfinite(vi))).sum())
        if n_drop:
            res.notes.append(f"{n_drop} stud{'y' if n_drop == 1 else 'ies'} without a finite estimate left out")
        rows = study_rows(yi, vi, res.tau2)
    else:
        res = meta_analyze(measure, method, ai, n1i, ci, n2i, hksj=hksj, cc=cc)
        rows = study_table(measure, ai, n1i, ci, n2i, res.tau2, cc)
    d = res.to_dict()
    d["outcome"] = outcome
    d["inclusion"] = sel.describe()
    if not reported and arms == "two" and not counts_only and "measure" in table.frame:
        d["notes"] = d.get("notes", []) + [f"{method} uses counts only; rows' reported estimates are not used"]
    d["studies"] = [{"study_id": s, **r, "reported": bool(rep)}
                    for s, r, rep in zip(sel.study_ids, rows, sel.reported)]
    d["evidence_note"] = table.description.evidence_note
    return d


def _freq_moderated(table, outcome, measure, method, *, hksj, all_studies, exclude, cc, mods, subgroup,
                    counts_only=False):
    """``freq --mods`` / ``--subgroup``: :func:`rescuemeta.metareg.rma_mods` or :func:`~rescuemeta.metareg.subgroups`
    on the selected rows, as a JSON-ready dict."""
    import numpy as np

    from .metareg import design, rma_mods, subgroups

    if method not in ("DL", "REML", "PM", "EE"):
        raise InputError(f"--mods/--subgroup take an inverse-variance method (DL, REML, PM, EE), not {method}")
    yi, vi, sel = _effect_sizes(table, outcome, measure, all_studies, exclude, cc, counts_only)
    es = SimpleNamespace(yi=yi, vi=vi)
    ok = np.isfinite(es.yi) & np.isfinite(es.vi)
    ids = [s for s, good in zip(sel.study_ids, ok) if good]
    nat = _nat(measure)
    names = [m.strip() for m in (mods or subgroup or "").split(",") if m.strip()]
    cols = {n: [v for v, good in zip(vals, ok) if good] for n, vals in sel.columns(names).items()}
    base = {"outcome": outcome, "measure": measure, "inclusion": sel.describe(),
            "evidence_note": table.description.evidence_note}
    if not ok.all():
        base["dropped"] = [s for s, good in zip(sel.study_ids, ok) if not good]
    if mods is not None:
        dsg = design(cols, names, ids)
        res = rma_mods(es.yi[ok][dsg.keep], es.vi[ok][dsg.keep], dsg, method=method, hksj=hksj, measure=measure)
        d = {**base, "mods": names, **res.to_dict()}
        # natural scale: exp for ratios (a moderator's coefficient is then a ratio of ratios); for PLO the intercept
        # is a rate (expit) and the other coefficients odds ratios
        f_int = nat
        f_coef = math.exp if measure in ("OR", "RR", "PLO") else (lambda x: x)
        d["natural"] = {name: {k: (f_int if name == "intrcpt" else f_coef)(c[k]) for k in ("estimate", "ci_low", "ci_high")}
                        for name, c in res.coefficients.items()}
        d["studies_used"] = [s for s, k in zip(ids, dsg.keep) if k]
        return d
    res_s = subgroups(es.yi[ok], es.vi[ok], cols[names[0]], column=names[0], method=method, hksj=hksj,
                      measure=measure)
    d = {**base, **res_s.to_dict()}
    for s in d["subgroups"].values():
        s["natural"] = {k: nat(s[k]) for k in ("estimate", "ci_low", "ci_high")}
    return d


def _print_moderated(d):
    f = _nat(d["measure"])
    if "coefficients" in d:
        t = Table(title=f"Meta-regression: {d['outcome']}, {d['measure']} ({d['method']}"
                  + (", Knapp-Hartung" if d["hksj"] else "") + f"), k = {d['k']}",
                  caption=d.get("evidence_note"), caption_justify="left")
        for c in ("coefficient", "estimate", "SE", "95% CI", "p", "natural (95% CI)"):
            t.add_column(c, justify="left" if c == "coefficient" else "right")
        for name, c in d["coefficients"].items():
            n = d["natural"][name]
            t.add_row(escape(name), _fmt(c["estimate"]), _fmt(c["se"]), f"{_fmt(c['ci_low'])} to {_fmt(c['ci_high'])}",
                      _fmt_p(c["pval"]), f"{_fmt(n['estimate'])} ({_fmt(n['ci_low'])} to {_fmt(n['ci_high'])})")
        out.print(t)
        qm_df = d["qm_df"]
        qm_txt = (f"F({qm_df[0]}, {qm_df[1]}) = {d['qm']:.3f}" if isinstance(qm_df, list) else
                  f"QM(df = {qm_df}) = {d['qm']:.3f}")
        r2 = "—" if d["r2"] is None else f"{d['r2']:.1f}%"
        out.print(f"Test of moderators: {qm_txt}, p = {_fmt_p(d['qm_pval'])}. Residual heterogeneity: tau² = "
                  f"{_fmt(d['tau2'])}, I² = {d['i2']:.1f}%, QE(df = {d['qe_df']}) = {d['qe']:.3f}, p = "
                  f"{_fmt_p(d['qe_pval'])}; R² = {r2}.")
    else:
        t = Table(title=f"Subgroups by {d['column']}: {d['outcome']}, {d['measure']} ({d['method']})",
                  caption=d.get("evidence_note"), caption_justify="left")
        for c in ("level", "k", "estimate (natural)", "95% CI", "tau²"):
            t.add_column(c, justify="left" if c == "level" else "right")
        for lv, s in d["subgroups"].items():
            t.add_row(escape(lv), str(s["k"]), _fmt(f(s["estimate"])), f"{_fmt(f(s['ci_low']))} to {_fmt(f(s['ci_high']))}",
                      _fmt(s["tau2"]))
        out.print(t)
        out.print(f"Test for subgroup differences: Q = {d['q_between']:.3f}, df = {d['q_between_df']}, p = "
                  f"{_fmt_p(d['q_between_pval'])}.")
    for n in d.get("notes", []):
        out.print(escape(f"Note: {n}"))


@app.command()
def freq(
    data: Path = DataOpt,
    outcome: str | None = typer.Option(None, "--outcome", help="Outcome to pool [default: the file's only "
                                          "outcome]."),
    measure: Measure = typer.Option(Measure.OR, "--measure", help="OR, RR, RD (two-arm) or PLO (treatment arm)."),
    method: Method = typer.Option(Method.REML, "--method", help="tau^2 estimator or pooling method."),
    hksj: bool = typer.Option(False, "--hksj", help="Hartung-Knapp-Sidik-Jonkman adjustment."),
    all_studies: bool = AllStudiesOpt,
    exclude_basis: str | None = ExcludeOpt,
    cc_add: float = typer.Option(0.5, "--cc-add", help="Continuity correction added to zero-cell studies."),
    cc_to: str = typer.Option("only0", "--cc-to", help=f"Which studies get it: {', '.join(CC_TARGETS)}."),
    keep_double_zero: bool = typer.Option(False, "--keep-double-zero",
                                          help="Keep double-zero studies (metafor rma()'s default)."),
    all_outcomes: bool = typer.Option(False, "--all", help="A table of standard analyses for every outcome."),
    studies: bool = typer.Option(False, "--studies", help="Also print the per-study table (effect, 95% CI, "
                                 "weight)."),
    mods: str | None = typer.Option(None, "--mods", help="Meta-regression on these study-table columns, e.g. "
                                    "year or circulation,year (numeric as they are; text with the first sorted "
                                    "level as reference); as metafor's rma(mods = ...)."),
    subgroup: str | None = typer.Option(None, "--subgroup", help="A random-effects fit per level of this column "
                                        "and the test for subgroup differences."),
    counts_only: bool = CountsOnlyOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Frequentist pooled estimate (metafor-compatible), meta-regression (--mods) or subgroups (--subgroup)."""
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
                for _arms, pairs in (("two", ALL_TWO_ARM), ("one", ALL_ONE_ARM)):
                    for meas, meth in pairs:
                        try:
                            rows.append(_freq_row(table, oc, meas, meth, hksj=False, all_studies=all_studies,
                                                  exclude=exclude, cc=cc, counts_only=counts_only))
                        except InputError as e:
                            rows.append({"outcome": oc, "measure": meas, "method": meth, "unavailable": e.message})
            if as_json:
                emit_json(rows)
            else:
                _print_freq_table(rows, table.description.evidence_note)
            return
        outcome = table.resolve_outcome(outcome, hint="--outcome NAME (or --all)")
        if mods is not None or subgroup is not None:
            if mods is not None and subgroup is not None:
                raise InputError("--mods and --subgroup are two analyses: give one")
            if all_outcomes or studies:
                raise InputError("--mods/--subgroup take one outcome, without --all or --studies")
            d = _freq_moderated(table, outcome, measure.value, method.value, hksj=hksj, all_studies=all_studies,
                                exclude=exclude, cc=cc, mods=mods, subgroup=subgroup, counts_only=counts_only)
            if as_json:
                emit_json(d)
            else:
                _print_moderated(d)
            return
        d = _freq_row(table, outcome, measure.value, method.value, hksj=hksj, all_studies=all_studies,
                      exclude=exclude, cc=cc, counts_only=counts_only)
        if as_json:
            emit_json(d)
        else:
            _print_freq_table([d], table.description.evidence_note, studies=studies)


def _nat(measure):
    if measure in ("OR", "RR"):
        return math.exp
    if measure == "PLO":
        return lambda x: 1 / (1 + math.exp(-x))
    return lambda x: x


def _fmt_p(p) -> str:
    if p is None or (isinstance(p, float) and not math.isfinite(p)):
        return "—"
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


def _print_freq_table(rows, note=None, studies=False):
    t = Table(title="Frequentist pooled estimates", caption=note, caption_justify="left")
    for c in ["outcome", "measure", "method", "k", "estimate (natural)", "95% CI", "p", "tau²", "I² %", "Q",
              "95% PI (natural)"]:
        t.add_column(c, justify="right" if c not in ("outcome", "measure", "method") else "left")
    for r in rows:
        if "unavailable" in r:
            t.add_row(r["outcome"], r["measure"], r["method"], "0", "—", r["unavailable"][:60], "", "", "", "", "")
            continue
        nat = r["natural"]
        f = _nat(r["measure"])
        pi = "—" if r["pi_low"] is None else f"{_fmt(f(r['pi_low']))} to {_fmt(f(r['pi_high']))}"
        t.add_row(r["outcome"], r["measure"] + (" (HKSJ)" if r["hksj"] else ""), r["method"], str(r["k"]),
                  _fmt(nat["estimate"]), f"{_fmt(nat['ci_low'])} to {_fmt(nat['ci_high'])}", _fmt_p(r["pval"]),
                  _fmt(r["tau2"]), _fmt(r["i2"], 1), _fmt(r["q"], 2), pi)
    out.print(t)
    if len(rows) == 1 and rows[0].get("k") == 1:
        out.print("k = 1: a single study, so nothing is pooled: the estimate is that study's own, and there is no "
                  "between-study variance and no prediction interval.")
    if studies and len(rows) == 1 and rows[0].get("studies"):
        r = rows[0]
        f = _nat(r["measure"])
        st = Table(title=f"Studies ({r['outcome']}, {r['measure']})")
        for c in ("study", f"{r['measure']} (natural)", "95% CI", "weight % (inverse variance)"):
            st.add_column(c, justify="left" if c == "study" else "right")
        for s in r["studies"]:
            ok = s["yi"] is not None
            st.add_row(s["study_id"], _fmt(f(s["yi"])) if ok else "—",
                       f"{_fmt(f(s['ci_low']))} to {_fmt(f(s['ci_high']))}" if ok else "not estimable",
                       _fmt(s["weight"], 1) if s["weight"] is not None else "—")
        out.print(st)
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
    published: Path | None = typer.Option(None, "--published", help="Other published meta-analyses' pooled "
                                          "ratios [default: published_meta_analyses.csv beside --data, when it "
                                          "exists]."),
    all_studies: bool = AllStudiesOpt,
    exclude_basis: str | None = ExcludeOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Published pooled estimates (e.g. an abstract's) next to our reproduction, and an audit of the printed
    numbers; other published meta-analyses beside ours, with k."""
    from .check import PUBLISHED_NAME, compare_published, load_published

    with guard():
        exclude = parse_exclude_basis(exclude_basis)
        table = load_studies(data)
        source = load_source(abstract)
        rows = run_check(table, load_abstract(abstract), all_studies=all_studies, exclude_basis=exclude,
                         source=source)
        beside = Path(data).parent / PUBLISHED_NAME
        pub_path = published if published is not None else (beside if beside.exists() else None)
        pub = (compare_published(table, load_published(pub_path), all_studies=all_studies, exclude_basis=exclude)
               if pub_path is not None else [])
        if as_json:
            emit_json(rows if pub_path is None else {"abstract": rows, "published": pub})
            return
        if pub:
            _print_published(pub)
        t = Table(title=f"The {source.label}'s estimates against our reproduction",
                  caption=table.description.evidence_note, caption_justify="left")
        for c in ["outcome", "quantity", source.short(), "ours: method", "k", "ours", f"ours/{source.label}",
                  f"{source.label} in our CI"]:
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
                              for f in au["flags"]) or "[green]no flag[/]"
            a.add_row(r["outcome"], r["quantity"], f"{ab['estimate']:g} ({ab['ci_low']:g}–{ab['ci_high']:g})"
                      + (f" {ab['p']}" if ab["p"] else ""), f"{au['midpoint']:.3g}", p_impl, flags)
        out.print(a)


# ---------------------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------------------

ModelKind = Enum("ModelKind", {name: name for name in MODEL_KINDS}, type=str)  # type: ignore[misc]


class RatioMeasure(str, Enum):
    OR = "OR"
    RR = "RR"


class Backend(str, Enum):
    nutpie = "nutpie"
    pymc = "pymc"


TauPriorOpt = typer.Option(None, "--tau-prior", show_default=False,
                           help="Prior on tau, e.g. halfnormal(0.5), turner(all_cause_mortality, nonpharma_vs_pharma), "
                           "invgamma(a, b) on tau². Default per model: "
                           + "; ".join(f"{k.name} {k.default_tau_prior}" for k in MODEL_KINDS.values()) + ".")
EffectPriorOpt = typer.Option(DEFAULT_EFFECT_PRIOR, "--effect-prior", help="Prior on mu: normal(m, s) or "
                              "student_t(nu, m, s).")
BaselinePriorOpt = typer.Option(DEFAULT_BASELINE_PRIOR, "--baseline-prior",
                                help="Prior on the study baselines alpha_i (contrast model).")
ModsOpt = typer.Option(None, "--mods", help="Meta-regression on these study-table columns, e.g. circulation,year "
                       "(normal model, exact).")
SubgroupOpt = typer.Option(None, "--subgroup", help="Effects per level of this column: a meta-regression on it, "
                           "summarised per level (normal model).")
CoefPriorOpt = typer.Option("normal(0, 10)", "--coef-prior", help="Prior on meta-regression coefficients.")
ControlRiskOpt = typer.Option("median", "--control-risk",
                              help="What RR and RD are conditional on: median (the median observed control-arm risk "
                              "of the included studies, the same for every model), a risk such as 0.3, mean-draws "
                              "(contrast: the mean of the study baselines, per draw) or marginal (contrast: "
                              "population-averaged risks, with hierarchical baselines; Warn et al. 2002).")


def _split_mods(mods: str | None) -> tuple[str, ...]:
    return tuple(m.strip() for m in (mods or "").split(",") if m.strip())


def _config_from_options(outcome, model, measure, tau_prior, effect_prior, baseline_prior, draws, tune, chains,
                         seed, all_studies, exclude_basis, nuts, backend, control_risk="median", *, mods=(),
                         subgroup="", coef_prior="normal(0, 10)", counts_only=False, bias_prior=""):
    from .fit import FitConfig

    mk = MODEL_KINDS[model.value]
    if measure is not None and len(mk.measures) == 1:
        choices = [k.name for k in MODEL_KINDS.values() if len(k.measures) > 1]
        raise InputError(f"--measure applies to the {' and '.join(choices)} model only: the {mk.name} model "
                         + ("estimates an event rate" if mk.estimand == "rate" else
                            f"estimates the {mk.measures[0]} (RR and RD are derived at a baseline risk)")
                         + f"; drop --measure or use --model {' or '.join(choices)}")
    cfg = FitConfig(outcome=outcome, model=model.value, measure=(measure or RatioMeasure.OR).value, tau_prior=tau_prior or "",
                    effect_prior=effect_prior, baseline_prior=baseline_prior, all_studies=all_studies,
                    exclude_basis=parse_exclude_basis(exclude_basis), method="nuts" if nuts else "auto",
                    draws=draws, tune=tune, chains=chains, seed=seed, backend=backend.value,
                    control_risk=control_risk, mods=mods, subgroup=subgroup, coef_prior=coef_prior,
                    effects="counts" if counts_only else "reported", bias_prior=bias_prior or "")
    cfg.validate()
    return cfg


def _write_fit(res, out_dir: Path) -> list[str]:
    ensure_dir(out_dir)
    mk = res.config.kind
    stem = f"{res.config.outcome}_{res.config.model}" + (f"_{res.config.measure}" if len(mk.measures) > 1 else "")
    written = [str(write_text(out_dir / f"{stem}.json", json.dumps(_clean(res.summary()), indent=2) + "\n"))]
    if res.idata is not None:
        written.append(res.to_netcdf(out_dir / f"{stem}.nc"))
    return written


@app.command()
def fit(
    data: Path = DataOpt,
    outcome: str | None = typer.Option(None, "--outcome", help="Outcome to analyse [default: the file's only "
                                          "outcome]."),
    model: ModelKind = typer.Option(ModelKind["contrast"], "--model", help="contrast (two arms), proportion "
                                    "(treatment arm) or normal (normal-normal on log OR/RR, exact)."),
    measure: RatioMeasure | None = typer.Option(None, "--measure", help="OR or RR: the scale of the normal "
                                                   "model [default: OR]; the binomial models take none."),
    tau_prior: str | None = TauPriorOpt,
    effect_prior: str = EffectPriorOpt,
    baseline_prior: str = BaselinePriorOpt,
    control_risk: str = ControlRiskOpt,
    draws: int | None = typer.Option(None, "--draws", help="Posterior draws per chain [default: 1000, or "
                                        "the spec's with --all]."),
    tune: int = typer.Option(1000, "--tune", help="Tuning draws per chain."),
    chains: int = typer.Option(4, "--chains", help="Chains."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed [default: 1, or the spec's with --all]."),
    all_studies: bool = AllStudiesOpt,
    exclude_basis: str | None = ExcludeOpt,
    nuts: bool = typer.Option(False, "--nuts", help="Normal model: sample with NUTS instead of exact quadrature."),
    backend: Backend = typer.Option(Backend.nutpie, "--backend", help="NUTS implementation."),
    out_dir: Path | None = typer.Option(None, "--out", help="Write <outcome>_<model>.json and .nc here."),
    all_outcomes: bool = typer.Option(False, "--all", help="Every outcome and model of the spec."),
    spec_path: Path | None = typer.Option(None, "--spec", help="Analysis spec used by --all [default: the "
                                             "built-in defaults]."),
    abstract: Path | None = typer.Option(None, "--abstract", help="Published estimates to show beside the "
                                            "fits (--all)."),
    mods: str | None = ModsOpt,
    subgroup: str | None = SubgroupOpt,
    coef_prior: str = CoefPriorOpt,
    acr: str | None = typer.Option(None, "--acr", help="Assumed control risks for the absolute effects, e.g. "
                                   "0.2,0.4,0.6 [default: the lowest, median and highest control-arm risk of the "
                                   "included studies]."),
    counts_only: bool = CountsOnlyOpt,
    bias_prior: str | None = BiasPriorOpt,
    design_model: str = typer.Option("pooled", "--design-model", help="pooled (design ignored), bias (--bias-prior "
                                     "on non-randomised rows) or stratified (randomised and non-randomised rows "
                                     "fitted apart, and their difference); normal model."),
    bayes_factors: bool = typer.Option(False, "--bayes-factors", help="Contrast and proportion models: Bayes "
                                       "factors for mu = 0 and tau = 0 and the log marginal likelihood by bridge "
                                       "sampling (four more fits); the normal model's are always given (exact)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Bayesian hierarchical model: posterior of the pooled effect, tau, natural scales and a new study."""
    from .fit import fit as run_fit

    with guard():
        if all_outcomes:
            _fit_all(data, spec_path, abstract, draws, seed, backend.value, out_dir, as_json)
            return
        table = load_studies(data)
        outcome = table.resolve_outcome(outcome, hint="--outcome NAME (or --all)")
        if design_model not in ("pooled", "bias", "stratified"):
            raise InputError(f"--design-model must be pooled, bias or stratified, not {design_model!r}")
        if design_model == "bias" and not bias_prior:
            raise InputError("--design-model bias needs --bias-prior")
        resolved = None
        if bias_prior:
            from .bias import resolve_bias_prior

            resolved = resolve_bias_prior(bias_prior, table.description.better(outcome))
        cfg = _config_from_options(outcome, model, measure, tau_prior, effect_prior, baseline_prior,
                                   1000 if draws is None else draws, tune, chains, 1 if seed is None else seed,
                                   all_studies, exclude_basis, nuts, backend, control_risk,
                                   mods=_split_mods(mods), subgroup=subgroup or "", coef_prior=coef_prior,
                                   counts_only=counts_only, bias_prior=resolved if design_model != "stratified"
                                   else None)
        if design_model == "stratified":
            from dataclasses import replace

            from .bias import design_models

            dm = design_models(table, replace(cfg, bias_prior=""), resolved)
            if as_json:
                emit_json(_clean(dm))
            else:
                _print_design_models(dm)
            return
        if bayes_factors:
            from dataclasses import replace

            cfg = replace(cfg, bayes_factors=True)
        acrs = parse_acr(acr)
        if acrs is not None and MODEL_KINDS[cfg.model].estimand != "ratio":
            raise InputError(f"--acr applies to ratio models; the {cfg.model} model estimates an event rate")
        if out_dir is not None:
            ensure_dir(out_dir)
        res = run_fit(table, cfg)
        if out_dir is not None:
            _write_fit(res, out_dir)
        summary = dict(res.summary())
        if acrs is not None:
            summary["absolute"] = res.absolute(acrs)
            summary["acr"] = {"risks": acrs, "chosen_as": "given (--acr)"}
        if as_json:
            emit_json(summary)
        else:
            _print_fit(summary)


def _print_published(pub: list[dict]) -> None:
    t = Table(title="Other published meta-analyses beside ours (DerSimonian-Laird on our rows, reported estimates "
                    "where given)")
    for c in ("source", "outcome", "k", "published", "ours: k", "ours", "ours/published"):
        t.add_column(c, justify="left" if c in ("source", "outcome") else "right")
    for p in pub:
        ci = "" if p["ci_low"] is None else f" ({p['ci_low']:g}–{p['ci_high']:g})"
        o = p["ours"]
        if "unavailable" in o:
            t.add_row(escape(p["source_id"]), p["outcome"], str(p["k"]), f"{p['quantity']} {p['estimate']:g}{ci}",
                      "0", o["unavailable"][:50], "—")
            continue
        t.add_row(escape(p["source_id"]), p["outcome"], str(p["k"]), f"{p['quantity']} {p['estimate']:g}{ci}",
                  str(o["k"]), f"{o['estimate']:.2f} ({o['ci_low']:.2f}–{o['ci_high']:.2f})", f"×{p['ratio']:.2f}")
    out.print(t)


def _print_design_models(dm: dict) -> None:
    t = Table(title="Study design: pooled, bias-adjusted and stratified (pooled effect, posterior median and 95% CrI)")
    for c in ("analysis", "k", "ratio", "95% CrI"):
        t.add_column(c, justify="left" if c == "analysis" else "right")

    def add(name, s):
        if s is None:
            t.add_row(name, "0", "—", "no rows")
            return
        r = s[s["measure"].lower()]
        t.add_row(name, str(s["k"]), _fmt(r["q50"]), f"{_fmt(r['q025'])} to {_fmt(r['q975'])}")
    add("pooled (design ignored)", dm["pooled"])
    if dm["bias"] is not None:
        add(f"bias-adjusted ({dm['bias']['priors'].get('bias')})", dm["bias"])
    add("randomised rows", dm["stratified"]["randomised"])
    add("non-randomised rows", dm["stratified"]["non_randomised"])
    out.print(t)
    if dm["stratified"].get("note"):
        out.print(dm["stratified"]["note"])
    elif dm["stratified"]["difference"] is not None:
        d = dm["stratified"]["difference"]
        out.print(f"Ratio of ratios, non-randomised / randomised: {math.exp(d['q50']):.3g} "
                  f"({math.exp(d['q025']):.3g} to {math.exp(d['q975']):.3g})")


@app.command()
def tipping(
    data: Path = DataOpt,
    outcome: str | None = typer.Option(None, "--outcome", help="Outcome [default: the file's only outcome]."),
    query: str | None = typer.Option(None, "--query", help="e.g. 'OR < 1' [default: OR < 1, or OR > 1 where more "
                                     "events are better]."),
    threshold: float = typer.Option(0.95, "--threshold", help="The probability the conclusion rests on."),
    bias_sd: float = typer.Option(0.1, "--bias-sd", help="SD of the bias on the log scale."),
    measure: RatioMeasure = typer.Option(RatioMeasure.OR, "--measure", help="OR or RR (normal model)."),
    model: str = typer.Option("normal", "--model", help="normal (exact, Brent's method) or contrast (NUTS: "
                              "importance reweighting, then refits at the root)."),
    tau_prior: str | None = TauPriorOpt,
    effect_prior: str = EffectPriorOpt,
    draws: int = typer.Option(1000, "--draws", help="Posterior draws per chain (contrast)."),
    seed: int = typer.Option(1, "--seed", help="Random seed (contrast)."),
    all_studies: bool = AllStudiesOpt,
    exclude_basis: str | None = ExcludeOpt,
    counts_only: bool = CountsOnlyOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """How much bias in the non-randomised rows would bring P(query) down to --threshold."""
    from .bias import tipping_point
    from .fit import FitConfig
    from .pipeline import mirror_query

    with guard():
        table = load_studies(data)
        oc = table.resolve_outcome(outcome, hint="--outcome NAME")
        if model not in ("normal", "contrast"):
            raise InputError(f"--model {model}: the tipping point is available for normal and contrast")
        cfg = FitConfig(oc, model, measure=measure.value, tau_prior=tau_prior or "", effect_prior=effect_prior,
                        all_studies=all_studies, exclude_basis=parse_exclude_basis(exclude_basis),
                        effects="counts" if counts_only else "reported", draws=draws, seed=seed)
        cfg.validate()
        if query is None:
            base = f"{FitConfig(oc, model, measure=measure.value).effect_measure} < 1"
            query = mirror_query(base) if table.description.better(oc) == "higher" else base
        tp = tipping_point(table, cfg, query, threshold, bias_sd)
        if as_json:
            emit_json({"outcome": oc, "model": model, "measure": cfg.effect_measure, **tp})
            return
        out.print(f"{oc}: P({query}) = {tp['probability_without_bias']:.3f} without a bias model, "
                  f"{tp['probability_at_zero']:.3f} with bias N(0, {bias_sd:g}^2).")
        if tp["bias_mean"] is None:
            out.print(tp["note"])
        else:
            out.print(f"Tipping point: bias mean {tp['bias_mean']:+.3f} on the log scale (a ratio of ratios of "
                      f"{tp['ratio_of_ratios']:.3g}). {tp['note']}.")


@app.command()
def average(
    data: Path = DataOpt,
    outcome: str | None = typer.Option(None, "--outcome", help="Outcome [default: the file's only outcome]."),
    model: str = typer.Option("normal", "--model", help="normal (exact evidences) or contrast (evidences by bridge "
                              "sampling: four NUTS fits)."),
    draws: int = typer.Option(1000, "--draws", help="Posterior draws per chain (contrast; at least 1000)."),
    seed: int = typer.Option(1, "--seed", help="Random seed (contrast)."),
    baseline_prior: str = BaselinePriorOpt,
    measure: RatioMeasure = typer.Option(RatioMeasure.OR, "--measure", help="OR or RR (normal model)."),
    query: str | None = typer.Option(None, "--query", help="e.g. 'OR < 1' [default: benefit in the outcome's "
                                     "direction]."),
    prior_probs: str | None = typer.Option(None, "--prior-probs", help="Prior model probabilities, e.g. "
                                           "fixed_null=0.25,fixed=0.25,random_null=0.25,random=0.25 [default: "
                                           "equal]."),
    tau_prior: str | None = TauPriorOpt,
    effect_prior: str = EffectPriorOpt,
    all_studies: bool = AllStudiesOpt,
    exclude_basis: str | None = ExcludeOpt,
    counts_only: bool = CountsOnlyOpt,
    bias_prior: str | None = BiasPriorOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Bayesian model averaging over fixed/random x no effect/effect (normal model: exact evidences; contrast
    model: bridge sampling)."""
    from .averaging import MODELS
    from .averaging import average as run_average
    from .fit import FitConfig

    with guard():
        table = load_studies(data)
        oc = table.resolve_outcome(outcome, hint="--outcome NAME")
        prior = None
        if prior_probs:
            prior = {}
            for part in prior_probs.split(","):
                name, _, val = part.partition("=")
                if name.strip() not in MODELS:
                    raise InputError(f"--prior-probs: unknown model {name.strip()!r}; models: {', '.join(MODELS)}")
                try:
                    prior[name.strip()] = float(val)
                except ValueError:
                    raise InputError(f"--prior-probs: {part!r} is not MODEL=PROBABILITY") from None
        resolved = None
        if bias_prior:
            from .bias import resolve_bias_prior

            resolved = resolve_bias_prior(bias_prior, table.description.better(oc))
        if model not in ("normal", "contrast"):
            raise InputError(f"--model must be normal or contrast for model averaging, not {model!r}")
        if model == "contrast" and measure.value != "OR":
            raise InputError("--measure applies to the normal model; the contrast model is on the OR scale")
        cfg = FitConfig(oc, model, measure=measure.value, tau_prior=tau_prior or "", effect_prior=effect_prior,
                        baseline_prior=baseline_prior, all_studies=all_studies,
                        exclude_basis=parse_exclude_basis(exclude_basis), draws=draws, seed=seed,
                        effects="counts" if counts_only else "reported", bias_prior=resolved or "")
        cfg.validate()
        res = run_average(table, cfg, prior, query)
        if as_json:
            emit_json(_clean(res))
            return
        t = Table(title=f"Model averaging: {oc} ({res['query']})", caption=f"priors: tau ~ {res['priors']['tau']}, "
                  f"mu ~ {res['priors']['effect']}", caption_justify="left")
        for c in ("model", "log evidence", "prior", "posterior", f"P({res['query']})"):
            t.add_column(c, justify="left" if c == "model" else "right")
        for m in res["models"].values():
            se = f" ± {m['log_evidence_se']:.3f}" if m.get("log_evidence_se") is not None else ""
            t.add_row(m["label"], f"{m['log_evidence']:.3f}{se}", f"{m['prior']:.3f}", f"{m['posterior']:.3f}",
                      f"{m['probability']:.3f}")
        out.print(t)
        out.print(f"Evidences: {res['method']}.")
        for w in res.get("warnings", []):
            out.print(f"[yellow]warning[/yellow]: a fit failed its convergence checks: {escape(w)}")
        out.print(f"Inclusion BF for an effect: {res['bf_inclusion_effect']:.3g} ({res['effect_words']} an effect); "
                  f"for heterogeneity: {res['bf_inclusion_heterogeneity']:.3g} ({res['heterogeneity_words']} "
                  "heterogeneity).")
        a = res["averaged"]
        r = a[res["measure"].lower()]
        out.print(f"Model-averaged P({res['query']}) = {a['probability']:.3f} (random effects alone: "
                  f"{res['random_effects']['probability']:.3f}); {res['measure']} {r['q500']:.3g} "
                  f"({r['q025']:.3g} to {r['q975']:.3g}), P(mu = 0) = {a['p_mu_zero']:.3f}.")


def parse_acr(text: str | None) -> list[float] | None:
    """``--acr 0.2,0.4,0.6`` -> [0.2, 0.4, 0.6]; each strictly between 0 and 1."""
    if text is None:
        return None
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--acr takes control risks separated by commas, e.g. 0.2,0.4,0.6; got {text!r}") from None
    if not vals or any(not 0 < v < 1 for v in vals):
        raise InputError(f"--acr: every control risk must be strictly between 0 and 1, got {text!r}")
    return vals


def _print_absolute(s: dict) -> None:
    rows = s.get("absolute") or []
    if not rows:
        return
    benefit = "more" if s.get("benefit") == "higher" else "fewer"
    t = Table(title=f"Absolute effects per 1000 at assumed control risks ({benefit} events are better)",
              caption=f"Control risks: {s['acr']['chosen_as']}. Treatment risk from the pooled "
                      f"{s['measure']} (posterior median, 95% CrI).", caption_justify="left")
    for c in ("assumed control risk", "control per 1000", "treatment per 1000", "difference per 1000", "NNT"):
        t.add_column(c, justify="left" if c == "assumed control risk" else "right")
    for a in rows:
        tr, rd = a["treatment_per_1000"], a["rd_per_1000"]
        nnt = "—" if a["nnt"] is None else f"{a['nnt']['sense']} {a['nnt']['value']:.0f}"
        t.add_row(f"{a['acr']:.3f} {a['label']}", f"{a['control_per_1000']:.0f}",
                  f"{tr['q50']:.0f} ({tr['q025']:.0f} to {tr['q975']:.0f})" + (" capped" if a["capped"] else ""),
                  f"{rd['q50']:+.0f} ({rd['q025']:+.0f} to {rd['q975']:+.0f})", nnt)
    out.print(t)


def _stat(s: dict | None, nd: int = 3) -> str:
    if not s or s.get("q50") is None:
        return "—"
    return f"{s['q50']:.{nd}f} ({s['q025']:.{nd}f}–{s['q975']:.{nd}f})"


def _print_fit(s: dict) -> None:
    t = Table(title=f"{s['outcome_label']}: {s['model']} model ({s['method']}), k = {s['k']}",
              caption=s.get("evidence_note"), caption_justify="left")
    for c in ("quantity", "median (95% CrI)", "mean", "sd", "95% HDI"):
        t.add_column(c, justify="left" if c == "quantity" else "right")
    labels = {"rate": "rate (median study)", "rate_mean": "rate (population mean)"}
    for key in ("mu", "tau", "or", "rr", "rd", "baseline_risk", "rate", "rate_mean", "theta_new", "or_new", "rr_new",
                "rd_new", "rate_new"):
        v = s.get(key)
        if not v or "q50" not in v:
            continue
        t.add_row(labels.get(key, key), _stat(v), _fmt(v["mean"]), _fmt(v["sd"]),
                  f"{_fmt(v['hdi_low'])} to {_fmt(v['hdi_high'])}")
    out.print(t)
    _print_regression(s)
    _print_absolute(s)
    p = s["priors"]
    out.print(f"Priors: tau ~ {p['tau']} (on {p['tau_scale']}), mu ~ {p['effect']}"
              + (f", alpha_i ~ {p['baseline']}" if p.get("baseline") else "") + ".")
    d = s["diagnostics"]
    if d.get("rhat_max") is not None:
        out.print(f"Diagnostics: R-hat max {d['rhat_max']:.3f}, ESS bulk/tail min {d['ess_bulk_min']:.0f}/"
                  f"{d['ess_tail_min']:.0f}, divergences {d['divergences']}, target_accept {d['target_accept']}.")
    inc = s["inclusion"]
    out.print(f"Inclusion: {inc['rule']}. Included: {', '.join(inc['included'])}.")
    if inc["excluded"]:
        out.print("Excluded: " + "; ".join(f"{x['study_id']} ({x['reason']})" for x in inc["excluded"]))


def _print_regression(s: dict) -> None:
    """Coefficients and subgroup effects of a meta-regression fit (model scale and natural scale)."""
    if "coefficients" not in s:
        return
    t = Table(title="Meta-regression coefficients (metafor's parameterisation)",
              caption=s["moderators"]["parameterisation"], caption_justify="left")
    for c in ("coefficient", "median (95% CrI)", "natural (95% CrI)"):
        t.add_column(c, justify="left" if c == "coefficient" else "right")
    for name, v in s["coefficients"].items():
        n = v["natural"]
        t.add_row(escape(name), _stat(v), f"{_fmt(n['q50'])} ({_fmt(n['q025'])} to {_fmt(n['q975'])})")
    out.print(t)
    if "subgroups" in s:
        t = Table(title=f"Effect per level of {s['moderators']['mods'][0]} (shared tau)")
        for c in ("level", "k", "median (95% CrI), natural"):
            t.add_column(c, justify="left" if c == "level" else "right")
        for lv, v in s["subgroups"].items():
            n = v["natural"]
            t.add_row(escape(lv), str(v["k"]) + (" (single study)" if v["k"] == 1 else ""),
                      f"{_fmt(n['q50'])} ({_fmt(n['q025'])} to {_fmt(n['q975'])})")
        out.print(t)


def _abstract_for(abstract, outcome: str, quantity: str):
    for a in abstract:
        if a.outcome == outcome and a.quantity == quantity:
            return a
    return None


def _fit_all(data, spec_path, abstract_path, draws, seed, backend, out_dir, as_json):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from . import pipeline
    from .spec import load_primary

    spec = load_primary(spec_path)
    table = load_studies(data)
    abstract = load_abstract(abstract_path) if abstract_path is not None else []
    source = load_source(abstract_path) if abstract_path is not None else None
    if out_dir is not None:
        ensure_dir(out_dir)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=False, disable=as_json and not err.is_terminal) as bar:
        task = bar.add_task("fitting", total=None)

        def step(i, n, cfg):
            bar.update(task, total=n, completed=i - 1, description=f"fitting {cfg.outcome} ({cfg.model})")

        run = pipeline.run(table, spec, abstract=abstract, draws=draws, seed=seed, backend=backend, progress=step)
        bar.update(task, completed=len(run.entries))
    if out_dir is not None:
        for e in run.fitted:
            _write_fit(e.result, out_dir)
    if as_json:
        rows = []
        for e in run.entries:
            if e.result is not None:
                rows.append({**e.result.summary(), "frequentist": e.reference.to_dict() if e.reference else None})
            elif e.unavailable is not None:
                rows.append({"outcome": e.outcome, "model": e.model, "unavailable": e.unavailable})
            else:
                rows.append({"outcome": e.outcome, "model": e.model, "error": e.failure["reason"],
                             "diagnostics": e.failure["diagnostics"]})
        emit_json(rows)
    else:
        _print_fit_table(run, abstract, source)
        for f in run.failures:
            err.print(f"[bold red]convergence failure:[/] {f['outcome']} ({f['model']}): {f['reason']}")
    if run.failures:
        raise typer.Exit(EXIT_CONVERGENCE)


def _print_fit_table(run, abstract, source):
    table, spec = run.table, run.spec
    title = "Bayesian posterior beside the frequentist estimate" + (f" and the {source.label}'s" if source else "")
    t = Table(title=title, caption=table.description.evidence_note, caption_justify="left")
    cols = ["outcome", "model", "k", "quantity", "Bayes median (95% CrI)", "tau median", "frequentist (method, k)"]
    cols += [source.short()] if source else []
    for c in cols + ["R-hat / ESS / div"]:
        t.add_column(c)
    for e in run.entries:
        if e.failure is not None:
            t.add_row(e.outcome, e.model, "—", "—", "not reported: failed its convergence guard",
                      *[""] * (len(cols) - 4))
            continue
        if e.unavailable is not None:
            t.add_row(e.outcome, e.model, "0", "—", e.unavailable[:70], *[""] * (len(cols) - 4))
            continue
        r = e.result.summary()
        qty, key = ("rate", "rate") if e.measure == "PLO" else (e.measure, e.key)
        a = _abstract_for(abstract, e.outcome, "pooled_rate_treat" if e.measure == "PLO" else e.measure)
        ref = e.reference
        freq_txt = (f"{ref.estimate:.3f} ({ref.ci_low:.3f}–{ref.ci_high:.3f}) {ref.label}" if ref is not None
                    else f"— ({e.reference_note})"[:40])
        a_txt = "—" if a is None else f"{a.estimate:g} ({a.ci_low:g}–{a.ci_high:g})"
        d = r["diagnostics"]
        diag = (f"{d['rhat_max']:.3f} / {min(d['ess_bulk_min'], d['ess_tail_min']):.0f} / {d['divergences']}"
                if d.get("rhat_max") is not None else "exact")
        qlabel = qty + (f" ({e.result.control_risk.mode} control risk)" if key in ("rr", "rd") else "")
        t.add_row(e.outcome, e.model, str(r["k"]), qlabel, _stat(r.get(key)), _fmt(r["tau"]["q50"]), freq_txt,
                  *([a_txt] if source else []), diag)
    out.print(t)
    out.print(f"Priors: tau ~ {spec.describe_tau_prior()}, mu ~ {spec.effect_prior}, alpha_i ~ {spec.baseline_prior} "
              f"(spec {spec.path}); per-outcome overrides: {', '.join(spec.outcome) or 'none'}. Frequentist: REML "
              "for ratios, the binomial-normal GLMM for rates.")


# ---------------------------------------------------------------------------------------------------
# prob
# ---------------------------------------------------------------------------------------------------

@app.command()
def prob(
    queries: list[str] = typer.Argument(..., help="Queries such as 'RR < 1' 'RR < 0.8' 'RD < -0.05' 'NNT < 10'."),
    data: Path = DataOpt,
    outcome: str | None = typer.Option(None, "--outcome", help="Outcome to analyse [default: the file's only "
                                          "outcome]."),
    model: ModelKind = typer.Option(ModelKind["contrast"], "--model", help="contrast, proportion or normal."),
    measure: RatioMeasure | None = typer.Option(None, "--measure", help="OR or RR: the scale of the normal "
                                                   "model [default: OR]; the binomial models take none."),
    tau_prior: str | None = TauPriorOpt,
    effect_prior: str = EffectPriorOpt,
    baseline_prior: str = BaselinePriorOpt,
    control_risk: str = ControlRiskOpt,
    mods: str | None = ModsOpt,
    subgroup: str | None = SubgroupOpt,
    coef_prior: str = CoefPriorOpt,
    draws: int = typer.Option(1000, "--draws", help="Posterior draws per chain."),
    tune: int = typer.Option(1000, "--tune", help="Tuning draws per chain."),
    chains: int = typer.Option(4, "--chains", help="Chains."),
    seed: int = typer.Option(1, "--seed", help="Random seed."),
    all_studies: bool = AllStudiesOpt,
    exclude_basis: str | None = ExcludeOpt,
    nuts: bool = typer.Option(False, "--nuts", help="Normal model: NUTS instead of exact quadrature."),
    backend: Backend = typer.Option(Backend.nutpie, "--backend", help="NUTS implementation."),
    predictive: bool = typer.Option(False, "--predictive", help="Ask about the effect in a new study."),
    baseline_risk: float | None = typer.Option(None, "--baseline-risk",
                                                  help="Control-arm risk for RR/RD/NNT [default: the one "
                                                       "--control-risk gives]."),
    direction: str | None = typer.Option(None, "--direction", help="'higher' if more events are better, "
                                            "'lower' if fewer are (sets the NNT sign) [default: the data's "
                                            "description, else lower]."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Posterior probabilities of statements about the effect: P(RR < 0.8), P(NNT < 10), ..."""
    from .fit import fit as run_fit
    from .queries import parse_query, probability

    with guard():
        parsed = [parse_query(q) for q in queries]  # reject malformed queries before any sampling
        table = load_studies(data)
        outcome = table.resolve_outcome(outcome)
        cfg = _config_from_options(outcome, model, measure, tau_prior, effect_prior, baseline_prior, draws, tune,
                                   chains, seed, all_studies, exclude_basis, nuts, backend, control_risk,
                                   mods=_split_mods(mods), subgroup=subgroup or "", coef_prior=coef_prior)
        if baseline_risk is not None and not (0 < baseline_risk < 1):
            raise InputError(f"--baseline-risk must be strictly between 0 and 1, got {baseline_risk}")
        try:
            res = run_fit(table, cfg)
        except ConvergenceError as e:
            e.args = (f"{e}; no probabilities are reported from a fit that failed its convergence guard",)
            raise
        rows = [probability(res, q, predictive=predictive, baseline_risk=baseline_risk, direction=direction)
                for q in parsed]
        if as_json:  # each result says what it is about: outcome, model, priors, direction
            ctx = {"outcome": outcome, "model": cfg.model, "measure": cfg.effect_measure, "priors": res.prior_record(),
                   "direction": res.summary()["direction"]}
            emit_json([{**ctx, **r} for r in rows])
            return
        t = Table(title=f"{table.description.label(outcome)}: {cfg.model} model ({rows[0]['method']}), k = {res.k}"
                  + (", effect in a new study" if predictive else ", pooled effect"),
                  caption=table.description.evidence_note, caption_justify="left")
        for c in ("query", "probability", "MCSE", "draws", "baseline risk"):
            t.add_column(c, justify="left" if c == "query" else "right")
        for r in rows:
            bl = ("—" if r["scale"] not in ("RR", "RD", "NNT", "NNH") else
                  r.get("baseline_risk_mode", "per draw") if r["baseline_risk"] is None else f"{r['baseline_risk']:.3f}")
            t.add_row(escape(f"P({r['query']})"), f"{r['probability']:.4f}", "exact" if r["mcse"] == 0 and r["draws"] is None
                      else f"{r['mcse']:.4f}", "—" if r["draws"] is None else str(r["draws"]), bl)
        out.print(t)


# ---------------------------------------------------------------------------------------------------
# model criticism: influence, cumulative, bias, loo
# ---------------------------------------------------------------------------------------------------

IVMethod = Enum("IVMethod", {m: m for m in ("DL", "REML", "PM")}, type=str)  # type: ignore[misc]


def _effect_sizes(table, outcome, measure, all_studies, exclude, cc=None, counts_only=False):
    """(yi, vi, selection) for an inverse-variance analysis: metafor's escalc on count rows, and (OR/RR, unless
    ``counts_only``) the rows' reported estimates as rma(yi, sei = ...) rows."""
    from .effects import ContinuityCorrection, escalc

    arms = "one" if measure == "PLO" else "two"
    reported = not counts_only and measure in ("OR", "RR")
    sel = select(table, outcome, arms=arms, all_studies=all_studies, exclude_basis=exclude,
                 effects="reported" if reported else "counts", measure=measure if reported else None)
    if arms == "two":
        yi, vi, _ = sel.effect_sizes(measure, cc)
        return yi, vi, sel
    es = escalc(measure, *sel.counts(), cc=cc or ContinuityCorrection())
    return es.yi, es.vi, sel


def _criticism_inputs(data, outcome, measure, all_studies, exclude_basis, counts_only=False):
    """The selected studies' effect sizes (metafor's escalc conventions; reported estimates as rma(yi, sei) rows):
    (table, selection, study ids, yi, vi, base)."""
    import numpy as np

    table = load_studies(data)
    outcome = table.resolve_outcome(outcome, hint="--outcome NAME")
    yi, vi, sel = _effect_sizes(table, outcome, measure, all_studies, parse_exclude_basis(exclude_basis),
                                counts_only=counts_only)
    es = SimpleNamespace(yi=yi, vi=vi)
    ok = np.isfinite(es.yi) & np.isfinite(es.vi)
    ids = [s for s, g in zip(sel.study_ids, ok) if g]
    base = {"outcome": outcome, "measure": measure, "inclusion": sel.describe(),
            "evidence_note": table.description.evidence_note,
            "dropped": [s for s, g in zip(sel.study_ids, ok) if not g]}
    return table, sel, ids, es.yi[ok], es.vi[ok], base


CritMeasureOpt = typer.Option(Measure.OR, "--measure", help="OR, RR, RD (two-arm) or PLO (treatment arm).")
CritMethodOpt = typer.Option(IVMethod["REML"], "--method", help="tau^2 estimator.")


@app.command()
def influence(
    data: Path = DataOpt,
    outcome: str | None = typer.Option(None, "--outcome", help="Outcome [default: the file's only outcome]."),
    measure: Measure = CritMeasureOpt,
    method: IVMethod = CritMethodOpt,
    hksj: bool = typer.Option(False, "--hksj", help="Knapp-Hartung tests."),
    all_studies: bool = AllStudiesOpt,
    counts_only: bool = CountsOnlyOpt,
    exclude_basis: str | None = ExcludeOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Leave-one-out and influence diagnostics (metafor leave1out + influence)."""
    from .criticism import influence as run_influence
    from .criticism import leave1out

    with guard():
        _, _, ids, yi, vi, base = _criticism_inputs(data, outcome, measure.value, all_studies, exclude_basis, counts_only)
        l1 = leave1out(yi, vi, method=method.value, hksj=hksj)
        inf = run_influence(yi, vi, method=method.value, hksj=hksj)
        rows = [{"study_id": s, **a, **b} for s, a, b in zip(ids, l1, inf)]
        if as_json:
            emit_json({**base, "method": method.value, "hksj": hksj, "studies": rows})
            return
        f = _nat(measure.value)
        t = Table(title=f"Leave-one-out and influence: {base['outcome']}, {measure.value} ({method.value})",
                  caption="Estimate and CI: the pooled result without the study (natural scale). rstudent beyond "
                          "+-2, a large Cook's distance or a covariance ratio well below 1 mark an influential study.",
                  caption_justify="left")
        for c in ("study", "estimate without", "95% CI", "tau² without", "rstudent", "DFFITS", "Cook's D", "cov ratio",
                  "weight %"):
            t.add_column(c, justify="left" if c == "study" else "right")
        for r in rows:
            t.add_row(escape(r["study_id"]), _fmt(f(r["estimate"])), f"{_fmt(f(r['ci_low']))} to {_fmt(f(r['ci_high']))}",
                      _fmt(r["tau2"]), _fmt(r["rstudent"], 2), _fmt(r["dffits"], 2), _fmt(r["cook_d"], 2),
                      _fmt(r["cov_r"], 2), _fmt(r["weight"], 1))
        out.print(t)


@app.command()
def cumulative(
    data: Path = DataOpt,
    outcome: str | None = typer.Option(None, "--outcome", help="Outcome [default: the file's only outcome]."),
    measure: Measure = CritMeasureOpt,
    method: IVMethod = CritMethodOpt,
    hksj: bool = typer.Option(False, "--hksj", help="Knapp-Hartung tests."),
    order: str | None = typer.Option(None, "--order", help="Add studies in the order of this column (e.g. year); "
                                     "ties and missing values keep table order [default: table order]."),
    all_studies: bool = AllStudiesOpt,
    counts_only: bool = CountsOnlyOpt,
    exclude_basis: str | None = ExcludeOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Cumulative meta-analysis (metafor cumul): the pooled result as studies are added."""
    from .criticism import cumulative as run_cumulative

    with guard():
        _, sel, ids, yi, vi, base = _criticism_inputs(data, outcome, measure.value, all_studies, exclude_basis, counts_only)
        key = None
        if order is not None:
            from .criticism import order_key

            pos = {s: i for i, s in enumerate(sel.study_ids)}
            vals = sel.columns([order])[order]
            key = order_key([vals[pos[s]] for s in ids], f"--order {order}")
        steps = run_cumulative(yi, vi, key, method=method.value, hksj=hksj)
        for st in steps:
            st["study_id"] = ids[st.pop("index")]
        if as_json:
            emit_json({**base, "method": method.value, "order": order, "steps": steps})
            return
        f = _nat(measure.value)
        t = Table(title=f"Cumulative meta-analysis: {base['outcome']}, {measure.value} ({method.value})"
                  + (f", by {order}" if order else ""))
        for c in ("added", "k", "estimate", "95% CI", "tau²"):
            t.add_column(c, justify="left" if c == "added" else "right")
        for st in steps:
            t.add_row(escape(st["study_id"]), str(st["k"]), _fmt(f(st["estimate"])),
                      f"{_fmt(f(st['ci_low']))} to {_fmt(f(st['ci_high']))}", _fmt(st["tau2"]))
        out.print(t)


@app.command()
def bias(
    data: Path = DataOpt,
    outcome: str | None = typer.Option(None, "--outcome", help="Outcome [default: the file's only outcome]."),
    measure: Measure = CritMeasureOpt,
    method: IVMethod = CritMethodOpt,
    hksj: bool = typer.Option(False, "--hksj", help="Knapp-Hartung test for the Egger regression."),
    force: bool = typer.Option(False, "--force", help="Run under 10 studies (low power: read with care)."),
    all_studies: bool = AllStudiesOpt,
    counts_only: bool = CountsOnlyOpt,
    exclude_basis: str | None = ExcludeOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Small-study effects: Egger's regression test (metafor regtest) and trim and fill (metafor trimfill)."""
    from .criticism import regtest, trimfill

    with guard():
        _, _, _, yi, vi, base = _criticism_inputs(data, outcome, measure.value, all_studies, exclude_basis, counts_only)
        eg = regtest(yi, vi, method=method.value, hksj=hksj, force=force)
        tf = trimfill(yi, vi, method=method.value, force=force)
        if as_json:
            emit_json({**base, "egger": eg, "trimfill": tf})
            return
        f = _nat(measure.value)
        out.print(f"Egger regression test ({method.value}, SE as predictor): {'t' if hksj else 'z'} = {eg['z']:.3f}, "
                  f"p = {_fmt_p(eg['pval'])}; limit estimate {_fmt(f(eg['limit_estimate']))} "
                  f"({_fmt(f(eg['ci_low']))} to {_fmt(f(eg['ci_high']))}).")
        out.print(f"Trim and fill (L0): {tf['k0']} stud{'y' if tf['k0'] == 1 else 'ies'} estimated missing on the "
                  f"{tf['side']}; filled estimate {_fmt(f(tf['estimate']))} ({_fmt(f(tf['ci_low']))} to "
                  f"{_fmt(f(tf['ci_high']))}), k = {tf['k']}. A sensitivity analysis, not a correction.")


@app.command()
def loo(
    data: Path = DataOpt,
    outcome: str | None = typer.Option(None, "--outcome", help="Outcome [default: the file's only outcome]."),
    measure: RatioMeasure = typer.Option(RatioMeasure.OR, "--measure", help="OR or RR (normal model)."),
    model: str = typer.Option("normal", "--model", help="normal (exact, by quadrature), proportion or contrast "
                              "(PSIS-LOO with the study effect integrated out, refits where Pareto k > 0.7; the "
                              "contrast model predicts the treatment arm given the study's control arm)."),
    tau_prior: str | None = TauPriorOpt,
    effect_prior: str = EffectPriorOpt,
    draws: int = typer.Option(1000, "--draws", help="Posterior draws per chain (proportion model)."),
    seed: int = typer.Option(1, "--seed", help="Random seed (proportion model)."),
    all_studies: bool = AllStudiesOpt,
    counts_only: bool = CountsOnlyOpt,
    exclude_basis: str | None = ExcludeOpt,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Bayesian leave-one-study-out: log p(y_i | y_-i) per study (normal: exact; binomial models: PSIS-LOO + refits)."""
    from .criticism import exact_loo, psis_loo
    from .priors import parse

    with guard():
        if model not in ("normal", "proportion", "contrast"):
            raise InputError(f"--model {model}: leave-one-study-out is available for normal, proportion and contrast")
        if model in ("proportion", "contrast"):
            from .fit import FitConfig
            from .fit import fit as run_fit

            table = load_studies(data)
            oc = table.resolve_outcome(outcome, hint="--outcome NAME")
            cfg = FitConfig(oc, model, tau_prior=tau_prior or "", effect_prior=effect_prior, draws=draws,
                            seed=seed, all_studies=all_studies, exclude_basis=parse_exclude_basis(exclude_basis))
            res = run_fit(table, cfg)
            lo = psis_loo(table, res)
            if as_json:
                emit_json({"outcome": oc, "model": model, "priors": res.prior_record(), **lo})
                return
            t = Table(title=f"PSIS leave-one-study-out ({model} model): {oc}", caption=f"elpd: {lo['estimand']}",
                      caption_justify="left")
            for c in ("study", "elpd", "Pareto k", "refit"):
                t.add_column(c, justify="left" if c == "study" else "right")
            for r in lo["studies"]:
                t.add_row(escape(r["study_id"]), _fmt(r["elpd"], 3), _fmt(r["pareto_k"], 2), "yes" if r["refit"] else "")
            out.print(t)
            out.print(f"elpd_loo = {lo['elpd_loo']:.3f} (SE {lo['se']:.3f})")
            return
        _, _, ids, yi, vi, base = _criticism_inputs(data, outcome, measure.value, all_studies, exclude_basis, counts_only)
        tp = parse(tau_prior or MODEL_KINDS["normal"].default_tau_prior, "tau")
        ep = parse(effect_prior, "effect")
        if ep.family != "normal":
            raise InputError(f"the exact leave-one-out needs a normal effect prior, not {effect_prior}")
        import numpy as np

        ex_loo = exact_loo(yi, np.sqrt(vi), tp, *ep.params)
        studies = [{"study_id": s, **r} for s, r in zip(ids, ex_loo["studies"])]
        if as_json:
            emit_json({**base, "model": "normal", "priors": {"tau": tp.spec, "effect": ep.spec},
                       "elpd_loo": ex_loo["elpd_loo"], "studies": studies})
            return
        t = Table(title=f"Exact leave-one-study-out (normal model): {base['outcome']}, {measure.value}",
                  caption="elpd: log predictive density of the study's estimate given the others; PIT near 0 or 1: "
                          "the others do not predict it.", caption_justify="left")
        for c in ("study", "elpd", "PIT"):
            t.add_column(c, justify="left" if c == "study" else "right")
        for r in studies:
            t.add_row(escape(r["study_id"]), _fmt(r["elpd"], 3), _fmt(r["pit"], 3))
        out.print(t)
        out.print(f"elpd_loo = {ex_loo['elpd_loo']:.3f} (tau ~ {tp.spec}, mu ~ {ep.spec})")


# ---------------------------------------------------------------------------------------------------
# reanalyze
# ---------------------------------------------------------------------------------------------------

@app.command()
def reanalyze(
    measure: RatioMeasure | None = typer.Option(None, "--measure", help="RR or OR."),
    estimate: float | None = typer.Option(None, "--estimate", help="The published ratio."),
    ci: tuple[float, float] | None = typer.Option(None, "--ci", help="Its 95% CI: LOW HIGH."),
    from_abstract: bool = typer.Option(False, "--from-abstract", help="Every RR/OR line of the abstract file."),
    abstract: Path = typer.Option(DEFAULT_ABSTRACT, "--abstract", help="The abstract's printed estimates."),
    prior: list[str] | None = typer.Option(None, "--prior", help="reference, neutral, skeptical, enthusiastic, "
                                              "pessimistic or normal(m, s) on the log ratio; repeatable [default: "
                                              "the five named priors]."),
    threshold: list[float] | None = typer.Option(None, "--threshold", help="Report P(ratio < T); repeatable "
                                                    "[default: 1, 0.9, 0.8]."),
    important: float | None = typer.Option(None, "--important", help="Clinically important ratio for the "
                                              "skeptical/enthusiastic/pessimistic priors [default: 0.8, or 1.25 "
                                              "for outcomes where more events are better]."),
    center: str = typer.Option("auto", "--center", help="Centre the likelihood on the printed 'estimate', on the "
                               "CI's log 'midpoint', or 'auto': the estimate, unless the line is irregular (estimate "
                               "at a CI limit, CI asymmetric): then the centre whose implied p matches the printed "
                               "p."),
    direction: str | None = typer.Option(None, "--direction", help="'higher' if more events are better "
                                            "[default: the study table's description (--data), else lower]."),
    data: Path = typer.Option(DEFAULT_DATA, "--data", help="Study table whose description (beside it, .toml) "
                              "says which direction is benefit per outcome (--from-abstract)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
):
    """Bayesian re-analysis of a published pooled RR/OR (exact, conjugate normal on the log scale)."""
    from .description import load_description
    from .reanalyze import DEFAULT_THRESHOLDS, NAMED_PRIORS, PublishedEstimate, default_important
    from .reanalyze import reanalyze as run

    with guard():
        if direction is not None and direction not in ("higher", "lower"):
            raise InputError(f"--direction must be 'higher' or 'lower', not {direction!r}")
        desc = load_description(data) if Path(data).is_file() else load_description()
        priors = list(prior) if prior else list(NAMED_PRIORS)
        th = list(threshold) if threshold else list(DEFAULT_THRESHOLDS)
        inputs = []
        if from_abstract:
            if measure is not None or estimate is not None or ci is not None:
                raise InputError("--from-abstract takes its estimates from the file; drop --measure/--estimate/--ci")
            for a in load_abstract(abstract):
                if a.quantity in ("RR", "OR"):
                    inputs.append((a.outcome, PublishedEstimate(a.quantity, a.estimate, a.ci_low, a.ci_high, center,
                                                                label=f"{a.outcome} {a.quantity}", p_text=a.p_text)))
            if not inputs:
                raise InputError("no RR or OR lines in the abstract file", file=abstract)
        else:
            missing = [n for n, v in (("--measure", measure), ("--estimate", estimate), ("--ci", ci)) if v is None]
            if missing or measure is None or estimate is None or ci is None:
                raise InputError(f"give {', '.join(missing)} (or --from-abstract)")
            inputs.append((None, PublishedEstimate(measure.value, estimate, ci[0], ci[1], center,
                                                   label=f"{measure.value} {estimate:g} ({ci[0]:g}-{ci[1]:g})")))
        rows = []
        for oc, est in inputs:
            better = direction or (desc.better(oc) if oc is not None else None)
            r = run(est, priors, th, important if important is not None else default_important(better), better)
            for x in r["results"]:
                rows.append({**x, "outcome": oc, "input": r["input"]})
        if as_json:
            emit_json(rows)
            return
        caption = "Each posterior combines the printed line (SE from its 95% CI) with the prior."
        if from_abstract:
            src = load_source(abstract)
            if src.k is not None:
                caption += f" The {src.label} pooled {src.k} studies."
        t = Table(title="Bayesian re-analysis of published pooled estimates (exact, normal on the log scale)",
                  caption=caption, caption_justify="left")
        for c in ["input", "prior", "prior/data precision", "posterior median (95% CrI)"] + [
                f"P(benefit beyond {x:g})" for x in th]:
            t.add_column(c, justify="left" if c in ("input", "prior") else "right")
        last = None
        for r in rows:
            inp = r["input"]
            lab = (inp["label"] + (" (centred on the CI midpoint)" if inp["center"] == "midpoint" else "")
                   if inp["label"] != last else "")
            last = inp["label"]
            t.add_row(lab, r["prior"], f"{r['precision_ratio']:.2g}",
                      f"{r['median']:.3f} ({r['ci_low']:.3f}–{r['ci_high']:.3f})",
                      *[f"{p['probability']:.3f}" + (f" ({p['query']})" if p["query"].startswith("ratio >") else "")
                        for p in r["probabilities"]])
        out.print(t)
        out.print("P(benefit beyond T): P(ratio < T) where fewer events are better; P(ratio > 1/T) where more are "
                  "(shown beside the probability).")
        seen = set()
        for r in rows:
            inp = r["input"]
            if inp["label"] in seen:
                continue
            seen.add(inp["label"])
            for f in inp["flags"]:
                err.print(f"[yellow]warning[/] {inp['label']}: {f}", highlight=False)


# ---------------------------------------------------------------------------------------------------
# sensitivity
# ---------------------------------------------------------------------------------------------------

@app.command()
def sensitivity(
    data: Path = DataOpt,
    spec_path: Path = typer.Option(Path("models/sensitivity.toml"), "--spec", help="Grid spec (TOML)."),
    outcome: str | None = typer.Option(None, "--outcome", help="Run the grid for this outcome only."),
    workers: int = typer.Option(1, "--workers", help="Local worker processes."),
    scheduler: str | None = typer.Option(None, "--scheduler", help="Dask scheduler address tcp://HOST:PORT."),
    out_dir: Path = typer.Option(Path("results/sensitivity"), "--out", help="Tables, figures and the cache."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the figures."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as JSON."),
):
    """Prior sensitivity grid (or a simulation study): tidy table (CSV, Parquet), figures, psense diagnostics.

    Results are cached per configuration in OUT/cache: an interrupted run resumes where it stopped."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from . import sensitivity as sens

    with guard():
        _default_exists(spec_path, Path("models/sensitivity.toml"), "--spec")
        spec = sens.load_sensitivity(spec_path)
        if workers < 1:
            raise InputError(f"--workers must be >= 1, got {workers}")
        if spec.simulation is not None:
            if outcome is not None:
                raise InputError("--outcome does not apply to a simulation spec")
            cfgs = sens.simulation_grid(spec)
        else:
            table = load_studies(data)
            cfgs = sens.grid(spec, table.outcomes, outcome, description=table.description)
        ensure_dir(out_dir)
        cache = sens.default_cache_dir(out_dir)
        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                      TimeElapsedColumn(), console=err, disable=as_json and not err.is_terminal) as bar:
            task = bar.add_task("sensitivity grid" if spec.simulation is None else "simulation study", total=len(cfgs))
            res = sens.run_grid(cfgs, str(data), cache_dir=cache, workers=workers, scheduler=scheduler,
                                progress=lambda n: bar.update(task, completed=n))
        if spec.simulation is not None:
            summary = sens.summarize_simulation(res.rows)
            sens.write_tables(res.rows, out_dir, stem="simulation")
            sens.write_tables(summary, out_dir, stem="simulation_summary")
            if as_json:
                emit_json({"summary": summary, "rows": res.rows, "computed": res.computed, "cached": res.cached})
                return
            t = Table(title=f"Simulation study: {spec.simulation.replications} meta-analyses of k = {spec.simulation.k} "
                            f"(true mu {spec.simulation.mu:g}, tau {spec.simulation.tau:g})")
            for c in ("tau prior", "coverage mu (95% CrI)", "coverage tau", "bias mu", "RMSE mu", "width mu",
                      "width tau", "failed"):
                t.add_column(c)
            for r in summary:
                if "coverage_mu" not in r:
                    t.add_row(r["tau_prior"], "—", "—", "—", "—", "—", "—", str(r["failed"]))
                    continue
                t.add_row(r["tau_prior"], f"{r['coverage_mu']:.3f} ± {r['coverage_mu_mcse']:.3f}",
                          f"{r['coverage_tau']:.3f} ± {r['coverage_tau_mcse']:.3f}", f"{r['bias_mu']:+.3f}",
                          f"{r['rmse_mu']:.3f}", f"{r['width_mu']:.3f}", f"{r['width_tau']:.3f}", str(r["failed"]))
            out.print(t)
            out.print(f"{res.computed} fits computed, {res.cached} from the cache, {res.seconds:.1f} s.")
            return
        files = sens.write_tables(res.rows, out_dir)
        if not no_plots:
            files += sens.plot(res.rows, out_dir, note=table.description.evidence_note)
        if as_json:
            emit_json([{k: v for k, v in r.items() if k != "tau_density"} for r in res.rows])
            return
        t = Table(title="Prior sensitivity", caption=table.description.evidence_note, caption_justify="left")
        for c in ("outcome", "model", "inclusion", "tau prior", "k", "effect median (95% CrI)", "tau median",
                  "P(benefit)", "psense prior/lik (tau)", "diagnosis (tau)", "k-hat", "R-hat/div"):
            t.add_column(c, overflow="fold")
        for r in res.rows:
            if r.get("status") != "ok":
                t.add_row(r["outcome"], r["model"], r["inclusion"], r["tau_prior"], str(r.get("k") or 0),
                          f"{r['status']}: {r.get('reason', '')[:60]}", "", "", "", "", "", "")
                continue
            p1 = next((r[k] for k in sens.probability_keys(r) if k.endswith("_lt_1") or k.endswith("_gt_1")), None)
            diag = "exact" if r["diag_rhat_max"] is None else f"{r['diag_rhat_max']:.3f}/{r['diag_divergences']}"
            t.add_row(r["outcome"], r["model"], r["inclusion"], r["tau_prior"], str(r["k"]),
                      f"{r['effect']} {r['effect_median']:.3f} ({r['effect_low']:.3f}–{r['effect_high']:.3f})",
                      _fmt(r["tau_median"]), "—" if p1 is None else f"{p1:.3f}",
                      f"{r['psens_prior_tau']:.3f}/{r['psens_lik_tau']:.3f}", r["psens_diag_tau"],
                      f"{r['psens_khat']:.2f}" + ("" if r["psens_khat_ok"] else " (!)"), diag)
        out.print(t)
        out.print(f"{len(res.rows)} configurations: {res.computed} computed, {res.cached} from the cache "
                  f"({cache}); {res.seconds:.1f} s. Written: {', '.join(files[:2])} and {max(len(files) - 2, 0)} figures.")


# ---------------------------------------------------------------------------------------------------
# analyze (the main job)
# ---------------------------------------------------------------------------------------------------

@app.command()
def analyze(
    spec_path: Path | None = typer.Option(None, "--spec", help="Analysis spec (TOML) [default: the built-in "
                                             "defaults: every outcome, contrast and proportion models]."),
    data: Path = DataOpt,
    abstract: Path | None = typer.Option(None, "--abstract", help="Published estimates to check against "
                                            "(CSV, e.g. data/abstract_estimates.csv) [default: no check]."),
    out_dir: Path = typer.Option(Path("report"), "--out", help="Where index.html, figures/ and tables/ go."),
    draws: int | None = typer.Option(None, "--draws", help="Override the spec's draws per chain."),
):
    """The main job: fits, probabilities, a small sensitivity grid and the frequentist estimates (and the check
    against published estimates with --abstract), as an HTML report."""
    import time

    from .spec import load_primary
    from .stamp import input_hash, up_to_date

    t0 = time.perf_counter()
    with guard():
        # fail fast on bad input, before any progress display or output
        load_primary(spec_path)
        table = load_studies(data)
        source = None
        if abstract is not None:
            load_abstract(abstract)
            source = load_source(abstract)
        if draws is not None and draws < 10:
            raise InputError(f"--draws must be an integer >= 10, got {draws}")
        ensure_dir(out_dir)
        # an unchanged analysis is answered from the report's stamp, before PyMC or matplotlib is imported
        res = up_to_date(out_dir, input_hash(spec_path, table, abstract, draws), t0)
        if res is None:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            from .report import analyze as run_analyze

            with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                          console=err) as bar:
                task = bar.add_task("starting", total=None)
                res = run_analyze(spec_path, data, abstract, out_dir, draws=draws,
                                  progress=lambda msg: bar.update(task, description=msg))
        title = ("Published vs frequentist vs Bayesian" if source is not None else "Frequentist vs Bayesian") + \
            " (posterior median, 95% CrI)"
        t = Table(title=title, caption=table.description.evidence_note, caption_justify="left")
        cols = ["outcome", "model", "quantity", "k"] + ([source.short()] if source is not None else []) + [
            "frequentist", "Bayesian median (95% CrI)", "new study (95% PrI)", "tau median (95% CrI)"]
        for c in cols:
            t.add_column(c, overflow="fold")
        for r in res["summary"]:
            t.add_row(*[str(r.get(c, "—")) for c in cols])
        out.print(t)
        if res.get("up_to_date"):
            out.print("The report is up to date (same spec, data, abstract and code); nothing was recomputed.")
        out.print(f"Report: {res['index']} ({res['fits']} fits, {res['figures']} figures; sensitivity grid "
                  f"{res['grid_computed']} computed, {res['grid_cached']} cached; {res['seconds']:.1f} s).")
        for f in res["failures"]:
            err.print(f"[bold red]convergence failure:[/] {f['outcome']} ({f['model']}): {f['reason']}")
        if res["failures"]:
            raise typer.Exit(EXIT_CONVERGENCE)


def _terminate(signum, frame):
    # SIGTERM becomes SystemExit, so that every atomic writer deletes its temporary file on the way out
    raise SystemExit(128 + signum)


def main():  # console-script entry point
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
