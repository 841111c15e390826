"""The report stage: ``rescuemeta analyze`` runs a primary analysis (a spec such as ``models/primary.toml``, or the
built-in defaults) on any study table: Bayesian fits, probability queries, a small prior-sensitivity grid, the
frequentist estimates, and, when published estimates are given, the check against them. It writes
``report/index.html`` with figures (PNG and SVG) and tables (CSV). Every word about the clinical question (title,
arm names, outcome labels, which direction is benefit, the evidence note) comes from the data's description
(:mod:`rescuemeta.description`). Fits and grid rows are cached in ``.cache/`` so a re-run with unchanged data and
spec takes seconds.
"""

from __future__ import annotations

import html
import json
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from . import figures, findings, pipeline, plots
from ._version import __version__
from .atomic import atomic_path, clean_stale_parts, ensure_dir, write_text
from .check import check as run_check
from .check import load_abstract
from .data import COUNT_BASIS, load_studies
from .description import Description, SourceDescription, load_source
from .errors import InputError, NotEstimable
from .fit import FitResult, fit
from .priors import parse
from .spec import describe_tau_priors, load_primary
from .stamp import current_report, input_hash, up_to_date

_input_hash = input_hash  # (the name the tests used before the stamp had its own module)

__all__ = ["CACHE_DIR", "forest_file", "densities_file", "benefit_curve_file", "analyze", "current_report"]

CACHE_DIR = Path(".cache")  # relative to the working directory; RESCUEMETA_CACHE moves it


# ---------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------

def _save(fig, out_dir: Path, stem: str) -> list[str]:
    return [Path(p).name for p in figures.save(fig, out_dir / stem, dpi=120, bbox_inches="tight")]


@figures.styled()
def forest_file(res: FitResult, measure: str, freq: dict | None, abstract_row, out_dir: Path,
                source: SourceDescription | None = None) -> list[str]:
    fig, ax = figures.new(plots.forest_size(res))
    plots.forest(res, measure, freq, abstract_row, source, ax=ax)
    if res.description.evidence_note:
        fig.text(0.01, -0.01, _wrap(res.description.evidence_note, fig.get_figwidth() * 0.99, 7), fontsize=7)
    return _save(fig, out_dir, f"forest_{res.config.outcome}_{res.config.model}")


def _wrap(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines of about ``width_in`` inches at ``fontsize`` points (an average glyph of 0.55 em,
    DejaVu Sans): matplotlib's own ``wrap=True`` measures the words again at every draw, 75 ms of a forest plot's
    ~0.4 s (issue 19)."""
    import textwrap

    chars = max(20, int(width_in * 72 / (0.55 * fontsize)))
    return "\n".join(textwrap.fill(part, chars) for part in text.split("\n"))


@figures.styled()
def densities_file(res: FitResult, out_dir: Path) -> list[str]:
    fig, axes = figures.new((9, 3), 1, 2)
    plots.densities(res, axes=axes)
    fig.suptitle(f"{res.description.label(res.config.outcome)} ({res.config.model}): posterior and prior")
    fig.tight_layout()
    return _save(fig, out_dir, f"density_{res.config.outcome}_{res.config.model}")


@figures.styled()
def benefit_curve_file(res: FitResult, measure: str, out_dir: Path) -> list[str]:
    fig, ax = figures.new((5.5, 3.4))
    plots.benefit_curve(res, measure, ax=ax)
    fig.tight_layout()
    return _save(fig, out_dir, f"benefit_curve_{res.config.outcome}_{res.config.model}")


# ---------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------

def _abstract_row(abstract, outcome, quantity):
    return next((a for a in abstract if a.outcome == outcome and a.quantity == quantity), None)


def _fmt_ci(est, lo, hi, nd=3):
    if est is None or lo is None:
        return "—"
    return f"{est:.{nd}f} ({lo:.{nd}f}–{hi:.{nd}f})"


def analyze(spec_path, data_path, abstract_path, out_dir, *, draws: int | None = None, progress=None,
            cache_dir: Path | None = None) -> dict:
    """Run the primary analysis and write the report.

    Parameters
    ----------
    spec_path : path or None
        The analysis spec; None for the built-in defaults (every outcome, contrast and proportion models).
    data_path : path
        The study table (its description, if any, beside it).
    abstract_path : path or None
        Published estimates to check against; None leaves the check out.

    Returns
    -------
    dict
        ``index`` (the HTML file), ``summary`` (the rows of the summary table), ``fits``, ``figures``,
        ``unavailable`` and ``failures`` (fits that failed their convergence guard: the report states them where
        the result would be), ``grid_computed``, ``grid_cached``, ``seconds``.
    """
    # PNG, plus what the spec asks for; figures whose inputs did not change since the last run are not redrawn
    with figures.formats(load_primary(spec_path).figure_formats), figures.memo(Path(out_dir) / "figures"):
        return _analyze(spec_path, data_path, abstract_path, out_dir, draws=draws, progress=progress,
                        cache_dir=cache_dir)


def _analyze(spec_path, data_path, abstract_path, out_dir, *, draws, progress, cache_dir) -> dict:
    import os

    from . import sensitivity as sens

    t0 = time.perf_counter()
    cache_dir = Path(cache_dir if cache_dir is not None else os.environ.get("RESCUEMETA_CACHE", CACHE_DIR))
    step = progress or (lambda *a, **k: None)
    spec = load_primary(spec_path)
    table = load_studies(data_path)
    desc = table.description
    abstract = load_abstract(abstract_path) if abstract_path is not None else []
    source = load_source(abstract_path) if abstract_path is not None else None
    out = ensure_dir(out_dir)
    stamp_path = out / ".inputs.json"
    inputs = input_hash(spec_path, table, abstract_path, draws)
    done = up_to_date(out, inputs, t0)
    if done is not None:
        return done
    figs = ensure_dir(out / "figures")
    tables = ensure_dir(out / "tables")
    for d in (out, figs, tables, Path(cache_dir) / "fits", Path(cache_dir) / "sections"):
        clean_stale_parts(d)  # temp files of a run that was killed mid-write
    # 1. the pipeline: fits, probability queries, frequentist references (shared with `fit --all`)
    run = pipeline.run(table, spec, abstract=abstract, draws=draws, cache_dir=cache_dir / "fits",
                       progress=lambda i, n, cfg: step(f"fitting {cfg.outcome} ({cfg.model}) [{i}/{n}]"))
    unavailable, failures, prob_rows = run.unavailable, run.failures, run.probabilities
    # 2. frequentist check against the published estimates
    step("frequentist check")
    check_rows = (run_check(table, abstract, all_studies=spec.all_studies, exclude_basis=tuple(spec.exclude_basis),
                            source=source) if abstract else [])
    # 4. small sensitivity grid
    step("prior sensitivity grid")
    # over the outcomes and model kinds the spec analyses (not every outcome of the data)
    sspec = sens.SensitivitySpec(path=str(spec_path), outcomes=list(spec.outcomes), models=list(spec.models),
                                 tau_priors={m: spec.sensitivity_tau_priors_for(m) for m in spec.models},
                                 effect_priors=[spec.effect_prior],
                                 inclusion=["dedup"], thresholds=list(spec.thresholds), baseline_prior=spec.baseline_prior,
                                 draws=draws or spec.draws, tune=spec.tune, chains=spec.chains, seed=spec.seed)
    grid_cfgs = sens.grid(sspec, table.outcomes, description=desc, unmatched="skip")
    # a fitted row whose configuration is one of the main fits (the grid's prior is the analysis's) reads its draws
    # from the fit cache instead of sampling them again
    grid = sens.run_grid(grid_cfgs, str(data_path), cache_dir=str(cache_dir / "sensitivity"),
                         progress=lambda n: step(f"prior sensitivity grid [{n}/{len(grid_cfgs)}]"),
                         fit_cache=str(cache_dir / "fits"))
    # 5. summary of findings: one line per outcome, first in the report
    findings_rows = [{"outcome": f["outcome"], "evidence": f["evidence"], "relative effect (95% CrI)": f["effect"],
                      "P(benefit)": "—" if f["p_benefit"] is None else f"{f['p_benefit']:.0%}",
                      "P(important benefit)": "—" if f["p_important"] is None else
                      f"{f['p_important']:.0%} ({f['important']})",
                      "absolute effect (median study's control risk)": f["absolute"], "answer": f["answer"],
                      "caveats": "; ".join(f["caveats"]) or "—"}
                     for f in findings.summary_of_findings(run.entries, desc, grid.rows)]
    # 6. figures
    step("figures")
    # figures are rendered by forked children while the analysis goes on; all are on disk when the block ends
    with figures.background():
        from .atomic import file_digest
        from .fit import fit_key

        fig_base = {"description": file_digest(desc.path) if desc.path else None,
                    "abstract": file_digest(abstract_path) if abstract_path is not None else None,
                    "abstract_description": (file_digest(Path(abstract_path).with_suffix(".toml"))
                                             if abstract_path is not None else None),
                    "thresholds": list(spec.thresholds)}

        def fkey(cfg) -> dict:  # what a fit's figures are drawn from (the fit's key covers its data and config)
            return {**fig_base, "fit": fit_key(cfg, table)}

        fig_files = {}
        summary_rows, diag_rows, absolute_rows = [], [], []
        for entry in run.fitted:
            res, oc, m, measure = entry.result, entry.outcome, entry.model, entry.measure
            assert res is not None
            a = _abstract_row(abstract, oc, "pooled_rate_treat" if measure == "PLO" else measure)
            freq = entry.reference.to_dict() if entry.reference is not None else None
            k = fkey(entry.config)
            s = res.summary()  # before the figures: a child forked now has it (the forest plot reads it) too
            names = figures.cached(f"forest_{oc}_{m}", k, partial(forest_file, res, "OR" if measure == "PLO" else measure,
                                                                  freq, a, figs, source), _names(f"forest_{oc}_{m}"))
            names += figures.cached(f"density_{oc}_{m}", k, partial(densities_file, res, figs),
                                    _names(f"density_{oc}_{m}"))
            if res.config.kind.estimand == "ratio":
                names += figures.cached(f"benefit_curve_{oc}_{m}", k, partial(benefit_curve_file, res, measure, figs),
                                        _names(f"benefit_curve_{oc}_{m}"))
            fig_files[(oc, m)] = names
            key = entry.key
            row = {"outcome": oc, "model": m,
                   "quantity": key.upper() if key != "rate" else f"event rate ({desc.treatment} arm), median study",
                   "k": s["k"] if s["k"] > 1 else "1 (single study: no pooling)"}
            if source is not None:
                row[source.short()] = "—" if a is None else f"{a.estimate:g} ({a.ci_low:g}–{a.ci_high:g})"
            summary_rows.append({
                **row,
                "frequentist": "—" if freq is None else f"{_fmt_ci(freq['estimate'], freq['ci_low'], freq['ci_high'])} "
                                                       f"[{freq['label']}]",
                "Bayesian median (95% CrI)": _fmt_ci(s[key]["q50"], s[key]["q025"], s[key]["q975"]),
                "new study (95% PrI)": _fmt_ci(s[f"{key}_new"]["q50"], s[f"{key}_new"]["q025"], s[f"{key}_new"]["q975"]),
                "tau median (95% CrI)": _fmt_ci(s["tau"]["q50"], s["tau"]["q025"], s["tau"]["q975"]),
                "population-mean rate (95% CrI)": (_fmt_ci(s["rate_mean"]["q50"], s["rate_mean"]["q025"],
                                                           s["rate_mean"]["q975"]) if "rate_mean" in s else "—"),
                "inclusion rule": s["inclusion"]["rule"], "studies": ", ".join(s["inclusion"]["included"])})
            for a in s.get("absolute", []):  # GRADE: absolute effects at assumed control risks
                tr, rd = a["treatment_per_1000"], a["rd_per_1000"]
                absolute_rows.append({
                    "outcome": desc.label(oc), "model": m, "measure": measure, "assumed control risk": a["label"],
                    "control per 1000": round(a["control_per_1000"]),
                    "treatment per 1000 (95% CrI)": f"{tr['q50']:.0f} ({tr['q025']:.0f} to {tr['q975']:.0f})"
                                                    + (" (capped at 1000)" if a["capped"] else ""),
                    "difference per 1000 (95% CrI)": f"{rd['q50']:+.0f} ({rd['q025']:+.0f} to {rd['q975']:+.0f})",
                    "NNT": "—" if a["nnt"] is None else f"{a['nnt']['sense']} {a['nnt']['value']:.0f}"})
            d = s["diagnostics"]
            if d.get("rhat_max") is None:  # exact quadrature: nothing sampled, nothing to diagnose
                diag_rows.append({"outcome": oc, "model": m, "R-hat max": "exact", "ok": True})
            else:
                diag_rows.append({"outcome": oc, "model": m, "R-hat max": round(d["rhat_max"], 4),
                                  "ESS bulk min": round(d["ess_bulk_min"]), "ESS tail min": round(d["ess_tail_min"]),
                                  "divergences": d["divergences"], "attempts": d["attempts"],
                                  "target_accept": d["target_accept"], "draws per chain": d["draws"], "ok": d["ok"]})
        for f in failures:  # stated where the result would be
            d = f["diagnostics"]
            summary_rows.append({"outcome": f["outcome"], "model": f["model"], "quantity": "—", "k": "—",
                                 "Bayesian median (95% CrI)": "not reported: the fit failed its convergence guard "
                                 f"(R-hat max {d.get('rhat_max', float('nan')):.3f}, ESS bulk/tail min "
                                 f"{d.get('ess_bulk_min', float('nan')):.0f}/{d.get('ess_tail_min', float('nan')):.0f}, "
                                 f"{d.get('divergences', '?')} divergences)"})
        sens_figs = [Path(p).name for p in sens.plot(grid.rows, out, note=desc.evidence_note)]
        step("subgroups and meta-regression")
        moderated_rows, moderated_figs = _moderated(run, figs, fkey)
        step("robustness: leave one out, small-study effects, predictive checks")
        robust_rows, robust_figs = _robustness(run, figs, cache_dir / "fits", fkey)
        step("non-randomised evidence: bias models and tipping points")
        bias_rows, bias_figs = _bias_section(run, figs, cache_dir / "sections")
        evidence_rows = _evidence_rows(run, cache_dir / "sections")
        robust_figs = robust_figs + bias_figs
    # 7. tables
    step("tables")
    audit_rows = []
    for r in check_rows:
        ab, au = r["abstract"], r["audit"]
        audit_rows.append({"outcome": r["outcome"], "quantity": r["quantity"],
                           "printed": f"{ab['estimate']:g} ({ab['ci_low']:g}–{ab['ci_high']:g}) {ab['p'] or ''}".strip(),
                           "flags": "; ".join(f"{f['severity']}: {f['message']}" for f in au["flags"]) or "no flag"})
    if "count_basis" in table.frame:
        prov = (table.frame.groupby(["outcome", "count_basis"]).size().unstack(fill_value=0)
                .reindex(columns=list(COUNT_BASIS), fill_value=0).reset_index())
    else:
        prov = table.frame.groupby("outcome").size().rename("rows").reset_index()
    frames = {"findings": pd.DataFrame(findings_rows), "summary": pd.DataFrame(summary_rows),
              "absolute": pd.DataFrame(absolute_rows),
              "probabilities": pd.DataFrame(prob_rows),
              "diagnostics": pd.DataFrame(diag_rows), "audit": pd.DataFrame(audit_rows), "provenance": prov,
              "sensitivity": sens.tidy(grid.rows), "unavailable": pd.DataFrame(unavailable + [_flat(f) for f in failures]),
              "subgroups": pd.DataFrame(moderated_rows), "robustness": pd.DataFrame(robust_rows),
              "bias": pd.DataFrame(bias_rows), "evidence": pd.DataFrame(evidence_rows)}
    for name, df in frames.items():
        with atomic_path(tables / f"{name}.csv") as tmp:
            df.to_csv(tmp, index=False)
    # 8. HTML
    step("HTML")
    page = _html(spec, table, frames, fig_files, sens_figs, unavailable, failures, check_rows, source, moderated_figs,
                 robust_figs)
    write_text(out / "index.html", page)
    result = {"index": str(out / "index.html"), "summary": summary_rows, "fits": len(run.fitted),
              "unavailable": unavailable, "failures": failures,
              "grid_computed": grid.computed, "grid_cached": grid.cached, "seconds": time.perf_counter() - t0,
              "figures": sum(len(v) for v in fig_files.values()) + len(sens_figs) + len(moderated_figs)
              + len(robust_figs)}
    files = ["index.html", *[f"figures/{n}" for v in fig_files.values() for n in v], *[f"figures/{n}" for n in sens_figs],
             *[f"figures/{n}" for n in moderated_figs], *[f"figures/{n}" for n in robust_figs],
             *[f"tables/{n}.csv" for n in frames]]
    if not failures:  # a report with failed fits is rebuilt next time
        write_text(stamp_path, json.dumps({"inputs": inputs, "files": files, "result": result}, default=str))
    return result


def _moderated(run, figs: Path, fkey=None) -> tuple[list[dict], list[str]]:
    """The spec's subgroup analyses and meta-regressions (:class:`rescuemeta.pipeline.ModeratedEntry`): one table
    row per level (subgroups) or coefficient (moderators), or one saying why there is none; and their figures."""
    rows: list[dict] = []
    names: list[str] = []
    for m in run.moderated:
        desc = run.table.description
        base = {"outcome": desc.label(m.outcome), "model": m.model, "by": m.column}
        if m.result is None:
            reason = m.unavailable or f"failed its convergence guard: {m.failure['reason'][:120]}"
            rows.append({**base, "level / coefficient": "—", "k": "—", "estimate (95% CrI)": f"not analysed: {reason}"})
            continue
        s = m.result.summary()
        if m.kind == "subgroup":
            comp = {c["level"]: c for c in m.comparisons}
            q = m.freq
            for lv, v in s["subgroups"].items():
                n = v["natural"]
                c = comp.get(lv)
                rows.append({**base, "level / coefficient": lv, "k": v["k"],
                             "estimate (95% CrI)": (f"{n['q50']:.3g} ({n['q025']:.3g}–{n['q975']:.3g})"
                                                    + (" — a single study, not pooled" if v["k"] == 1 else "")),
                             "P(larger benefit than reference)": (
                                 "reference" if c is None else f"{100 * c['probability']:.0f}% vs {c['reference']}"),
                             "frequentist Q between (p)": (
                                 "—" if q is None else f"{q.q_between:.2f} (p = {q.q_between_pval:.2g})")})
            names += _save_fig(lambda ax, m=m: plots.subgroup_forest(m.result, m.column, m.freq, m.comparisons,
                                                                     ax=ax),
                               (8.5, 0.4 * (m.result.k + 2 * len(s["subgroups"])) + 1.8), figs,
                               f"subgroups_{m.outcome}_{m.model}_{m.column}",
                               key=None if fkey is None else {**fkey(m.result.config), "column": m.column})
        else:
            v = s["coefficients"][m.column]
            n = v["natural"]
            rows.append({**base, "level / coefficient": f"per unit of {m.column}", "k": s["k"],
                         "estimate (95% CrI)": f"{n['q50']:.3g} ({n['q025']:.3g}–{n['q975']:.3g}) (ratio per unit)"})
            names += _save_fig(lambda ax, m=m: plots.bubble(m.result, m.column, ax=ax), (6, 4), figs,
                               f"bubble_{m.outcome}_{m.model}_{m.column}",
                               key=None if fkey is None else {**fkey(m.result.config), "column": m.column})
    return rows, names


def _robustness(run, figs: Path, cache_dir: Path | None = None, fkey=None) -> tuple[list[dict], list[str]]:
    """'How robust is this?' per ratio fit: P(benefit) with each study left out (Bayesian refits), the funnel plot
    with Egger's test (or why it was not run), the cumulative meta-analysis by year where the table has years,
    and the posterior predictive checks (:mod:`rescuemeta.criticism`)."""
    import numpy as np

    from . import criticism
    from .queries import probability

    rows: list[dict] = []
    names: list[str] = []
    desc = run.table.description
    for e in run.fitted:
        res = e.result
        if e.config.kind.estimand != "ratio":
            continue
        oc, m = e.outcome, e.model
        base = {"outcome": desc.label(oc), "model": m, "k": res.k}
        if res.k < 3:
            rows.append({**base, "P(benefit), all studies": "—", "leaving one study out": "not run: fewer than 3 "
                         "studies"})
            continue
        query = pipeline.mirror_query("OR < 1") if desc.better(oc) == "higher" else "OR < 1"
        full = {**res.summary()["or"], "probability": probability(res, query)["probability"]}
        lb = criticism.loo_benefit(run.table, e.config, query, cache_dir=cache_dir, res=res)
        fig_key = None if fkey is None else {**fkey(e.config), "query": query}
        names += _save_fig(lambda ax, lb=lb, full=full, q=query: plots.loo_forest(lb, full, "OR", q, ax=ax),
                           (7.5, 0.4 * (len(lb) + 2) + 1.4), figs, f"loo_{oc}_{m}", key=fig_key)
        sel = res.data.selection
        pos = {s: i for i, s in enumerate(sel.study_ids)}
        idx = [pos[s] for s in res.data.study_ids]
        yi, vi, _ = sel.effect_sizes("OR")  # count rows by escalc, reported ORs as they are
        es = SimpleNamespace(yi=yi[idx], vi=vi[idx])
        ok = np.isfinite(es.yi)
        ids = [s for s, g in zip(res.data.study_ids, ok) if g]
        egger, note = None, None
        if ok.sum() >= criticism.MIN_STUDIES_BIAS:
            egger = criticism.regtest(es.yi[ok], es.vi[ok])
        else:
            note = (f"Egger test not run: {int(ok.sum())} studies (it needs {criticism.MIN_STUDIES_BIAS}; below that it "
                    "cannot tell asymmetry from chance)")
        pooled = float(np.log(full["q50"]))
        names += _save_fig(lambda ax, y=es.yi[ok], v=es.vi[ok], eg=egger, nt=note, p=pooled:
                           plots.funnel(y, v, p, "OR", eg, nt, ax=ax), (6, 4.5), figs, f"funnel_{oc}_{m}", key=fig_key)
        if "year" in sel.frame.columns:
            years = sel.columns(["year"])["year"]
            key = criticism.order_key([years[pos[s]] for s in ids], "year")
            steps = criticism.cumulative(es.yi[ok], es.vi[ok], key)
            for st in steps:
                st["study_id"] = ids[st.pop("index")]
            names += _save_fig(lambda ax, st=steps: plots.cumulative_plot(st, "OR", "year", ax=ax),
                               (7, 0.35 * len(steps) + 1.6), figs, f"cumulative_{oc}_{m}", key=fig_key)
        pc = criticism.predictive_checks(res)
        off = [s["study_id"] for s in pc["studies"]
               if any(not 0.025 <= v <= 0.975 for k, v in s.items() if k.startswith("ppp"))]
        probs = [r["probability"] for r in lb]
        worst = max(lb, key=lambda r: abs(r["probability"] - full["probability"]))
        rows.append({**base, "P(benefit), all studies": f"{100 * full['probability']:.0f}% ({query})",
                     "leaving one study out": f"{100 * min(probs):.0f}%–{100 * max(probs):.0f}%; most influential: "
                                              f"{worst['study_id']} ({100 * worst['probability']:.0f}% without it)",
                     "small-study effects": (f"Egger z = {egger['z']:.2f}, p = {egger['pval']:.2g}" if egger else note),
                     "predictive checks": f"spread p = {pc['spread']['ppp']:.2f}; studies not reproduced: "
                                          + (", ".join(off) or "none")})
    return rows, names


def _evidence_rows(run, cache_dir: Path | None = None) -> list[dict]:
    """One row per outcome with comparative rows: the Bayes factor for an effect and for heterogeneity (normal
    model, exact; verbal scale of Lee & Wagenmakers 2013) and P(benefit) averaged over fixed/random x no
    effect/effect beside the random-effects one (:mod:`rescuemeta.averaging`). From the normal model only: with
    ``cache_dir`` each outcome's row is kept (:func:`_section_cached`)."""
    from dataclasses import asdict

    from .fit import FitConfig

    spec, table, desc = run.spec, run.table, run.table.description
    rows = []
    for oc in spec.resolve_outcomes(table.outcomes):
        cfg = FitConfig(oc, "normal", measure="OR", tau_prior=spec.tau_prior_for("normal", oc),
                        effect_prior=spec.effect_prior, all_studies=spec.all_studies,
                        exclude_basis=tuple(spec.exclude_basis))
        payload = {"cfg": asdict(cfg), "data": table.sha256, "description": _digest(desc.path)}
        _, row = _section_cached(cache_dir, f"evidence_{oc}", payload, partial(_evidence_row, table, cfg,
                                                                                desc.label(oc)))
        if row is not None:
            rows.append(row)
    return rows


def _evidence_row(table, cfg, label: str) -> dict | None:
    from .averaging import average, bf_words

    try:
        res = fit(table, cfg)
    except (InputError, NotEstimable):
        return None
    bf = res.bayes_factors()
    av = average(table, cfg)
    b10, h10 = 1 / bf["bf01_mu"], 1 / bf["bf01_tau"]
    return {"outcome": label, "k": res.k, "query": av["query"],
            "BF10 effect": f"{b10:.3g} ({bf_words(b10)} an effect)",
            "BF10 heterogeneity": f"{h10:.3g} ({bf_words(h10)} heterogeneity)",
            "P(benefit), random effects": f"{100 * av['random_effects']['probability']:.1f}%",
            "P(benefit), model-averaged": f"{100 * av['averaged']['probability']:.1f}%",
            "P(no effect) after averaging": f"{100 * av['averaged']['p_mu_zero']:.1f}%"}


def _digest(path) -> str | None:
    from .atomic import file_digest

    return file_digest(path) if path else None


def _bias_section(run, figs: Path, cache_dir: Path | None = None) -> tuple[list[dict], list[str]]:
    """'Non-randomised evidence' per outcome with comparative rows: P(benefit) of the normal model (exact; rows'
    reported, typically adjusted, estimates where given) without a bias model, with counts only, under each of
    the spec's bias priors (``bias_priors``), and the tipping point (:mod:`rescuemeta.bias`); one figure each.

    Everything here comes from the normal model, whatever the spec's other models: with ``cache_dir`` each
    outcome's rows, curve and tipping point are kept (:func:`_section_cached`) and its figure re-used, so that a
    changed contrast prior does not compute them again (issue 19: ~1 s and four figures of a changed-prior run).
    """
    from dataclasses import asdict

    from . import bias
    from .fit import FitConfig

    spec, table, desc = run.spec, run.table, run.table.description
    named_path = bias.find_bias_priors(spec.path if spec.path.endswith(".toml") else None)
    named = bias.load_bias_priors(named_path)
    rows: list[dict] = []
    names: list[str] = []
    for oc in spec.resolve_outcomes(table.outcomes):
        better = desc.better(oc)
        query = pipeline.mirror_query("OR < 1") if better == "higher" else "OR < 1"
        cfg = FitConfig(oc, "normal", measure="OR", tau_prior=spec.tau_prior_for("normal", oc),
                        effect_prior=spec.effect_prior, all_studies=spec.all_studies,
                        exclude_basis=tuple(spec.exclude_basis))
        priors = {n: (named[n].spec(better) if n in named else bias.resolve_bias_prior(n, better))
                  for n in spec.bias_priors}
        payload = {"cfg": asdict(cfg), "data": table.sha256, "description": _digest(desc.path), "query": query,
                   "bias_priors_file": _digest(named_path), "priors": priors, "threshold": spec.tipping_threshold,
                   "sd": spec.tipping_bias_sd}
        key, part = _section_cached(cache_dir, f"bias_{oc}", payload,
                                    partial(_bias_outcome, table, cfg, query, priors, spec, desc.label(oc)))
        if part is None:  # no comparative rows, or all randomised: nothing to say about bias
            continue
        rows += part["rows"]
        names += _save_fig(lambda ax, c=part["curve"], q=query, t=part["tipping"], mm=part["means"]:
                           plots.bias_plot(c, q, spec.tipping_threshold, t, mm, ax=ax), (6.5, 4), figs, f"bias_{oc}",
                           key=None if cache_dir is None else {"section": key})
    return rows, names


def _bias_outcome(table, cfg, query: str, priors: dict[str, str], spec, label: str) -> dict | None:
    """One outcome of :func:`_bias_section`: its table rows, the bias curve, the tipping point and the bias
    priors' means (None when the outcome has no comparative rows or no non-randomised one)."""
    from dataclasses import replace

    from . import bias
    from .queries import probability

    try:
        res = fit(table, cfg)
    except (InputError, NotEstimable):
        return None
    sel = res.data.selection
    rnd = dict(zip(sel.study_ids, sel.randomised))
    if all(rnd[s] for s in res.data.study_ids):
        return None
    n_rep = sum(bool(r) for s, r in zip(sel.study_ids, sel.reported) if s in set(res.data.study_ids))
    base = {"outcome": label, "k": res.k, "reported estimates": n_rep, "query": query}
    rows = [{**base, "analysis": "no bias model", "P": probability(res, query)["probability"]}]
    try:
        crude = fit(table, replace(cfg, effects="counts"))
        rows.append({**base, "analysis": "counts only (crude)", "k": crude.k,
                     "P": probability(crude, query)["probability"]})
    except (InputError, NotEstimable):
        pass
    means = {}
    for name, prior in priors.items():
        m, sd = parse(prior, "effect").params[:2]
        means[name] = float(m)
        p_bias = (bias.exact_bias_function(table, cfg, query, float(sd))(float(m)) if bias.is_fast(cfg) else
                  bias.bias_probability(table, cfg, query, float(m), float(sd)))
        rows.append({**base, "analysis": f"bias {name} = {prior}", "P": p_bias})
    tp = bias.tipping_point(table, cfg, query, spec.tipping_threshold, spec.tipping_bias_sd)
    rows.append({**base, "analysis": f"tipping point (bias SD {spec.tipping_bias_sd:g})",
                 "P": spec.tipping_threshold,
                 "bias mean": tp["bias_mean"], "ratio of ratios": tp["ratio_of_ratios"], "note": tp["note"]})
    return {"rows": rows, "curve": bias.bias_curve(table, cfg, query, spec.tipping_bias_sd), "tipping": tp,
            "means": means}


def _section_cached(cache_dir: Path | None, name: str, payload: dict, compute):
    """``compute()`` (a JSON-able value), kept under ``cache_dir`` by the hash of ``payload`` and the package's
    source (:func:`rescuemeta.atomic.cache_key`). Returns ``(key, value)``; the value is always the JSON round
    trip (numpy scalars as floats, tuples as lists, non-finite floats as None), so that a computed and a cached
    value print the same."""
    from .atomic import cache_key, to_jsonable

    key = cache_key({"section": name, **payload})
    path = None if cache_dir is None else Path(cache_dir) / f"{name}_{key}.json"
    if path is not None and path.is_file():
        try:
            return key, json.loads(path.read_text())["value"]
        except (OSError, ValueError, KeyError):
            pass  # unreadable: computed again
    value = json.loads(json.dumps(to_jsonable(compute())))
    if path is not None:
        ensure_dir(path.parent)
        write_text(path, json.dumps({"value": value}))
    return key, value


def _save_fig(draw, size, out_dir: Path, stem: str, key: dict | None = None) -> list[str]:
    """Draw ``draw(ax)`` on a new figure of ``size`` and save it as ``stem``; with ``key`` (what it is drawn from)
    a figure already drawn from the same inputs is re-used (:func:`rescuemeta.figures.cached`)."""
    @figures.styled()
    def render() -> list[str]:
        fig, ax = figures.new(size)
        draw(ax)
        return _save(fig, out_dir, stem)

    return figures.draw(render, _names(stem)) if key is None else figures.cached(stem, key, render, _names(stem))


def _names(stem: str) -> list[str]:
    """The file names a report figure ``stem`` is saved under (what :func:`_save` returns)."""
    return [Path(p).name for p in figures.names(stem)]


def _flat(failure: dict) -> dict:
    """A failure record with its diagnostics as columns of their own (for the CSV)."""
    return {**{k: v for k, v in failure.items() if k != "diagnostics"}, **failure["diagnostics"]}


# what each figure shows and how to read it, by the figure's file-name prefix
FIGURE_CAPTIONS = {
    "bias_": "Probability of benefit (normal model, exact) as every non-randomised study's log odds ratio is given a "
             "bias whose mean is on the horizontal axis (as a ratio of odds ratios, observed / true; SD as in the "
             "table). Left of 1: the studies made the odds ratio look smaller than it is. The dashed line is the "
             "threshold; the dot is the tipping point; vertical lines mark the named bias priors' means.",
    "forest_": "Forest plot. Grey squares: each study's observed estimate with its 95% confidence interval; blue "
               "circles: the same study after partial pooling (posterior median, 95% credible interval). Red diamond: "
               "the pooled estimate; open diamond: the effect to expect in a new study. Reference rows: the "
               "frequentist estimate and, where given, the published one.",
    "density_": "Posterior (solid) and prior (dashed) densities of the pooled effect mu and of the between-study SD "
                "tau. Where the two nearly coincide, the data say little and the prior carries the result.",
    "benefit_curve_": "For each threshold x on the horizontal axis, the probability that the ratio is below x: for "
                      "the pooled effect (solid) and for a new study (dashed). Read P(ratio < 1) at x = 1.",
    "sensitivity_": "Left: the effect's posterior median and 95% credible interval under each prior configuration "
                    "of the grid. Right: the probability of benefit at each threshold, in the outcome's direction of "
                    "benefit. An answer that moves across rows depends on the prior.",
    "subgroups_": "Studies grouped by the levels of a study characteristic: grey squares observed, blue circles after "
                  "partial pooling; red diamond: the level's effect (posterior median, 95% credible interval) from a "
                  "meta-regression on the characteristic with one between-study SD shared by all levels. Levels with "
                  "a single study are shown, not pooled. The title gives the frequentist test for subgroup "
                  "differences and the probability that the benefit is larger in each level than in the first.",
    "loo_": "Leave one study out: the pooled odds ratio (posterior median, 95% credible interval) and the probability "
            "of benefit when each study in turn is left out, against the analysis of all studies (top). A study "
            "whose removal moves the probability a lot is one the conclusion depends on.",
    "funnel_": "Funnel plot: each study's odds ratio against its standard error. White: where a study's own p-value "
               "would be 0.10 or more; light to dark grey: below 0.10, 0.05 and 0.01; dashed: the pooled estimate's 95% "
               "funnel. Missing studies in the "
               "white (non-significant) region on one side suggest small-study effects.",
    "cumulative_": "Cumulative meta-analysis: the frequentist pooled odds ratio and 95% CI as each study is added, "
                   "in order of publication year.",
    "bubble_": "Each study's observed effect against a numeric characteristic (area: inverse variance), with the "
               "meta-regression line (posterior median) and its 95% credible band.",
    "tau_prior_posterior_": "Prior (dashed) and posterior (solid) of the between-study SD tau under each tau prior: "
                            "how much the data moved it.",
}


def _control_risk_words(mode: str) -> str:
    from .defaults import CONTROL_RISKS

    return CONTROL_RISKS.get(mode, f"the control-arm risk {mode}")


def figure_caption(name: str) -> str:
    """The caption of a report figure (from its file name), saying what it shows and how to read it."""
    for prefix, text in sorted(FIGURE_CAPTIONS.items(), key=lambda kv: -len(kv[0])):
        if name.startswith(prefix):
            return text
    return ""


def _compact_probabilities(df: pd.DataFrame) -> pd.DataFrame:
    """The probability table as a reader wants it: one row per outcome and query, the pooled effect and a new
    study side by side, in percent, with the MCSE only where it reaches half a percentage point."""
    if df.empty:
        return df

    def cell(r) -> str:
        p = f"{100 * r['probability']:.0f}%"
        mcse = r.get("mcse")
        return p + (f" (MCSE {100 * mcse:.1f} points)" if mcse is not None and mcse >= 0.005 else "")

    rows: dict[tuple, dict] = {}
    for r in df.to_dict("records"):
        key = (r["outcome"], r["query"])
        row = rows.setdefault(key, {"outcome": r["outcome"], "query": r["query"], "benefit": r["benefit"],
                                    "at control risk": r["control_risk"] if isinstance(r.get("control_risk"), str)
                                    else "—"})
        row["new study" if r["predictive"] else "pooled effect"] = cell(r)
    last = ("at control risk", "benefit")
    return pd.DataFrame([{k: v for k, v in r.items() if k not in last} | {k: r[k] for k in last}
                         for r in rows.values()])


def _figure_html(name: str, formats) -> str:
    """A report figure: the PNG, linked to its SVG (or PDF) where the spec's ``figure_formats`` asked for one."""
    e = html.escape
    vector = next((f for f in ("svg", "pdf") if f in formats), None)
    target = name[:-4] + "." + vector if vector else name
    return (f'<figure><a href="figures/{e(target)}"><img src="figures/{e(name)}" alt="{e(name)}"></a>'
            f"<figcaption>{e(figure_caption(name))}</figcaption></figure>")


def _table_html(df: pd.DataFrame) -> str:
    return df.to_html(index=False, escape=True, border=0, classes="t", na_rep="—")


def _html(spec, table, frames, fig_files, sens_figs, unavailable, failures, check_rows, source,
          moderated_figs=(), robust_figs=()) -> str:
    e = html.escape
    desc: Description = table.description
    n_rows, n_studies = len(table.frame), table.frame["study_id"].nunique()
    title = desc.title or f"Meta-analysis of {Path(table.path).name}"
    higher = [desc.label(o) for o in table.outcomes if desc.better(o) == "higher"]
    unstated = [o for o in table.outcomes if desc.better(o) is None]
    parts = [f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>rescuemeta: {e(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}}
table.t{{border-collapse:collapse;font-size:13px;margin:0.5em 0 1.5em}} table.t td,table.t th{{border-bottom:1px solid #ddd;
padding:3px 8px;text-align:left;vertical-align:top}} .note{{background:#fff4e0;border-left:4px solid #e0a030;padding:0.6em 1em}}
img{{max-width:100%;border:1px solid #eee;margin:0.3em 0}} h2{{border-bottom:2px solid #333;padding-bottom:2px}}
code{{background:#f3f3f3;padding:0 3px}} figure{{margin:0.5em 0 1.2em}}
figcaption{{font-size:12px;color:#444;max-width:900px}}</style></head><body>
<h1>{e(title)}: Bayesian and frequentist meta-analysis</h1>
<p>Generated by rescuemeta {e(__version__)} from <code>{e(table.path)}</code> (sha256 {e(table.sha256[:16])}…;
{n_studies} studies, {n_rows} study-outcome rows) and <code>{e(spec.path)}</code>. Treatment: {e(desc.treatment)};
control: {e(desc.control)}.</p>"""]
    if desc.report_note or desc.evidence_note:
        parts.append('<div class="note"><b>The evidence base.</b> ' + " ".join(
            e(x) for x in (desc.report_note, desc.evidence_note) if x) + "</div>")
    head = "Summary: " + ("published vs " if source is not None else "") + "frequentist vs Bayesian"
    parts.append("<h2>Summary of findings</h2><p>One line per outcome: the relative effect (posterior median, 95% "
                 "credible interval), the probability that the treatment helps (in the outcome's direction of benefit) "
                 "and that it helps by a clinically important margin, the absolute effect per 1000 patients at the "
                 "median study's control-arm risk, and caveats computed from the data and the fits. 'likely' means a "
                 "probability of at least 95%, 'possible' at least 80%.</p>" + _table_html(frames["findings"]))
    parts.append(f"""<h2>{e(head)}</h2>
<p>Bayesian: contrast model (exact binomial likelihood, study baselines) for ratios, RR conditional on
{e(_control_risk_words(spec.control_risk))}; proportion model for {e(desc.treatment)}-arm event rates. Priors:
tau ~ {e(spec.describe_tau_prior())}, mu ~ {e(spec.effect_prior)}, alpha_i ~ {e(spec.baseline_prior)}. Frequentist: REML
(ratios), GLMM (rates).</p>
{_table_html(frames['summary'])}""")
    if len(frames["absolute"]):
        parts.append("<h2>Absolute effects at assumed control risks</h2><p>Events per 1000 patients without and with "
                     f"{e(desc.treatment)}, and their difference (posterior median, 95% CrI), at the lowest, median and "
                     "highest control-arm risk of the included studies (GRADE summary-of-findings practice). NNTB/NNTH: "
                     "number needed to treat for one more benefit / harm, at the median difference.</p>"
                     + _table_html(frames["absolute"]))
    if unavailable or failures:
        parts.append("<p><b>Not estimated:</b> " + "; ".join(
            e(f"{u['outcome']} ({u['model']}): {u['reason']}") for u in unavailable + failures) + "</p>")
    mirrored = (f" For {e(', '.join(higher))} (more events are better) the queries are mirrored." if higher else "")
    assumed = (f" The description does not say which direction is benefit for {e(', '.join(unstated))}: fewer "
               "events are taken as better." if unstated else "")
    parts.append("<h2>Probability of benefit</h2><p>Pooled effect and the effect in a new study (predictive)."
                 + mirrored + assumed + " Percentages; the Monte Carlo error is shown where it reaches half a "
                 "percentage point (exact fits have none).</p>" + _table_html(_compact_probabilities(frames["probabilities"])))
    parts.append("<h2>Per outcome</h2>")
    for (oc, m), names in fig_files.items():
        parts.append(f"<h3>{e(desc.label(oc))} — {e(m)} model</h3>")
        for nm in names:
            if nm.endswith(".png"):
                parts.append(_figure_html(nm, spec.figure_formats))
    if len(frames.get("subgroups", [])):
        parts.append("<h2>Subgroups and meta-regression</h2><p>Does the effect differ by "
                     + e(", ".join(dict.fromkeys(frames["subgroups"]["by"]))) + "? Each analysis is a meta-regression on "
                     "the characteristic (one between-study SD shared by its levels); the probability is that the "
                     "benefit, in the outcome's declared direction, is larger in that level than in the reference "
                     "level; the frequentist column is the test for subgroup differences of separate REML fits. With "
                     "so few studies per level, read these as descriptions, not as established differences.</p>"
                     + _table_html(frames["subgroups"]))
        for nm in moderated_figs:
            if nm.endswith(".png"):
                parts.append(_figure_html(nm, spec.figure_formats))
    if len(frames.get("robustness", [])):
        parts.append("<h2>How robust is this?</h2><p>Per outcome: the probability of benefit with each study left "
                     "out (Bayesian refits), small-study effects (Egger's test where there are 10 or more studies), "
                     "and posterior predictive checks (the between-study spread, p near 0 means the studies disagree "
                     "more than the model allows; studies whose counts the model does not reproduce).</p>"
                     + _table_html(frames["robustness"]))
        for nm in robust_figs:
            if nm.endswith(".png") and not nm.startswith("bias_"):
                parts.append(_figure_html(nm, spec.figure_formats))
    if len(frames.get("evidence", [])):
        parts.append("<h2>How strongly do the data support an effect?</h2><p>Bayes factors of the normal model on "
                     "log OR (exact): BF10 for an effect compares mu free (its prior as fitted) with mu = 0; for "
                     "heterogeneity, tau free with tau = 0. Unlike a probability of benefit, they depend strongly on "
                     "the width of the prior on mu. The model-averaged probability weighs the fixed- and random-"
                     "effects models with and without an effect (equal prior probabilities) by their evidence; the "
                     "no-effect models give no benefit.</p>" + _table_html(frames["evidence"]))
    if len(frames.get("bias", [])):
        bt = frames["bias"].copy()
        bt["P"] = bt["P"].map(lambda p: f"{100 * p:.1f}%")
        parts.append("<h2>Non-randomised evidence: how much bias would change the answer?</h2><p>Every comparative "
                     "row here is "
                     + ("non-randomised" if table.description.randomised is False else "treated as non-randomised "
                        "unless its design is rct")
                     + ": a probability of benefit is a statement about these studies, which may be confounded by "
                     "indication. Normal model on log OR (exact), rows' reported (adjusted) estimates where given; "
                     "'counts only' uses the crude counts instead. Each bias prior adds a bias N(m, s²) to every "
                     "non-randomised study's log OR (Turner et al. 2009); the tipping point is the mean bias at which "
                     "the probability falls to the threshold (a ratio of odds ratios, observed / true).</p>"
                     + _table_html(bt))
        for nm in robust_figs:
            if nm.endswith(".png") and nm.startswith("bias_"):
                parts.append(_figure_html(nm, spec.figure_formats))
    parts.append("<h2>Prior sensitivity</h2><p>Tau priors: "
                 + e(describe_tau_priors(spec.sensitivity_tau_priors, ("contrast", "proportion"), many=True)) +
                 ". psense: power-scaling sensitivity (Kallioinen et al. 2023); ≥ 0.05 flags an informative prior or "
                 "likelihood; k-hat > 0.7 means the importance weights are unreliable.</p>")
    for nm in sens_figs:
        if nm.endswith(".png"):
            parts.append(f'<figure><img src="figures/{e(nm)}" alt="{e(nm)}">'
                         f"<figcaption>{e(figure_caption(nm))}</figcaption></figure>")
    cols = ["outcome", "model", "tau_prior", "k", "effect", "effect_median", "effect_low", "effect_high", "tau_median",
            "psens_prior_tau", "psens_lik_tau", "psens_diag_tau", "psens_khat", "status"]
    sdf = frames["sensitivity"]
    parts.append(_table_html(sdf[[c for c in cols if c in sdf.columns]].round(3)))
    if source is not None:
        parts.append(f"<h2>Consistency of the {e(source.label)}'s printed numbers</h2>"
                     + (f"<p>{e(source.citation)}</p>" if source.citation else "") + _table_html(frames["audit"]))
    parts.append("<h2>Convergence diagnostics</h2><p>Guard: R-hat ≤ 1.01, bulk and tail ESS ≥ 400, no divergences "
                 "(one retry with target_accept 0.99 and more draws).</p>" + _table_html(frames["diagnostics"]))
    parts.append("<h2>Data provenance</h2><p>Rows per outcome" + (
        " by how the counts were obtained (reported, from a printed percent, fitted denominator, approximate)"
        if "count_basis" in table.frame else "") + ".</p>" + _table_html(frames["provenance"]))
    parts.append("""<p>Tables as CSV: <a href="tables/">tables/</a>. Figures as SVG: click a figure.</p>
<div id="img-check" data-status="pending"></div>
<script>window.addEventListener('load',function(){var imgs=document.images,bad=[];for(var i=0;i<imgs.length;i++){
if(!(imgs[i].complete&&imgs[i].naturalWidth>0)){bad.push(imgs[i].getAttribute('src'));}}
var d=document.getElementById('img-check');d.setAttribute('data-status',bad.length?'broken':'ok');
d.setAttribute('data-images',String(imgs.length));d.textContent=bad.join(' ');});</script>
</body></html>""")
    return "\n".join(parts)
