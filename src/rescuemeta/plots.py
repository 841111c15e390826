"""Plots in ArviZ's style: each function draws on the axes it is given (or on new ones) and returns them; none
saves a file or touches the backend (:mod:`rescuemeta.figures` makes and saves figures for the report).

* :func:`forest`: observed and shrunken study effects, the pooled effect, the prediction for a new study, and
  the frequentist and published estimates as reference rows (metafor / bayesmeta style);
* :func:`densities`: posterior densities of mu and tau with their priors;
* :func:`benefit_curve`: P(ratio < x | data) against x, pooled and for a new study;
* :func:`prior_forest` and :func:`tau_prior_posterior`: a prior-sensitivity grid's rows;
* :func:`subgroup_forest`: studies grouped by a moderator's levels, each level's effect, the between-subgroup test
  and the probability that the benefit differs; :func:`bubble`: study effects against a numeric moderator with
  the posterior meta-regression line.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
from scipy.special import expit

from . import figures
from .description import SourceDescription
from .effects import ContinuityCorrection, escalc
from .fit import FitResult

__all__ = ["forest_size", "forest", "densities", "benefit_curve", "prior_forest", "tau_prior_posterior",
           "subgroup_forest", "bubble", "funnel", "loo_forest", "cumulative_plot"]


def _log_axis(ax) -> None:
    """A log-scaled x axis whose ticks read as plain numbers (0.5, 1, 2), not 3x10^-1, also within a decade."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def forest_size(res: FitResult) -> tuple[float, float]:
    """A figure size that fits the forest plot of ``res``'s studies."""
    return (8.5, 0.42 * (res.k + 6) + 1.2)


def _study_effects(res: FitResult, measure: str):
    """Observed (escalc, 95% CI) and shrunken (posterior median, 95% CrI) study effects on the natural scale."""
    sel = res.data.selection
    ai, n1i, ci, n2i = sel.counts()
    # the fit's studies (some of the selection's may have been left out: double zeros, missing moderators)
    pos = {sid: j for j, sid in enumerate(sel.study_ids)}
    idx = [pos[sid] for sid in res.data.study_ids]
    ai, n1i = ai[idx], n1i[idx]
    if ci is not None and n2i is not None:
        ci, n2i = ci[idx], n2i[idx]
    post = res.idata.posterior
    theta = post["theta"].values
    rows = []
    if res.config.kind.estimand == "rate":
        from statsmodels.stats.proportion import proportion_confint

        lo, hi = proportion_confint(ai, n1i, alpha=0.05, method="wilson")
        shr = expit(theta)
        for i, sid in enumerate(res.data.study_ids):
            q = np.quantile(shr[..., i], [0.025, 0.5, 0.975])
            rows.append((sid, ai[i] / n1i[i], lo[i], hi[i], *q, f"{int(ai[i])}/{int(n1i[i])}"))
        return rows
    counted = escalc(measure, ai, n1i, ci, n2i, ContinuityCorrection())
    rep = sel.reported[idx]
    yi, vi = np.array(counted.yi, dtype=float), np.array(counted.vi, dtype=float)
    if rep.any():  # rows analysed by their reported estimate: show it (on its own scale only), not the crude counts
        on_scale = np.array([m == measure for m in sel.frame["measure"]])[idx]
        if (rep & on_scale).any() and on_scale[rep].all():
            y2, v2, _ = sel.effect_sizes(measure)
            yi, vi = np.where(rep, y2[idx], yi), np.where(rep, v2[idx], vi)
        yi[rep & ~on_scale] = np.nan
    es = SimpleNamespace(yi=yi, vi=vi)
    adjusted = ([bool(a) if a is not None else False for a in sel.frame["adjusted"]] if "adjusted" in sel.frame
                else [False] * sel.k)
    # theta is the log OR (contrast) or the log of the normal model's own measure; the contrast model's RR
    # needs each study's baseline
    ratio_is_theta = not res.config.kind.baseline_prior or measure == "OR"
    alpha = None if ratio_is_theta else post["alpha"].values.copy()
    est = np.asarray(res.data.model_data.arrays.get("est_mask", np.zeros(res.k))) > 0
    if alpha is not None and est.any():  # a reported row has no baseline data: its RR at the fit's control risk
        p0 = res.control_risk.value if res.control_risk.value is not None else float(np.nanmedian(
            res.observed_control_risks()))
        alpha[..., est] = np.log(p0 / (1 - p0))
    for i, sid in enumerate(res.data.study_ids):
        if alpha is None:
            shr = np.exp(theta[..., i])
        else:
            shr = expit(alpha[..., i] + theta[..., i]) / expit(alpha[..., i])
        q = np.quantile(shr, [0.025, 0.5, 0.975])
        y, v = es.yi[i], es.vi[i]
        obs = (math.exp(y), math.exp(y - 1.96 * math.sqrt(v)), math.exp(y + 1.96 * math.sqrt(v))) if np.isfinite(y) \
            else (np.nan, np.nan, np.nan)
        label = (f"{'adjusted ' if adjusted[idx[i]] else 'reported '}{measure}" if rep[i]
                 else f"{int(ai[i])}/{int(n1i[i])} vs {int(ci[i])}/{int(n2i[i])}")
        rows.append((sid, *obs, *q, label))
    return rows


def forest(res: FitResult, measure: str, freq: dict | None = None, abstract_row=None,
           source: SourceDescription | None = None, ax=None):
    """metafor/bayesmeta-style forest plot: observed and shrunken study estimates, the pooled estimate, the
    prediction for a new study, and the frequentist and abstract estimates as reference rows."""
    s = res.summary()
    rows = _study_effects(res, measure)
    key = "rate" if res.config.kind.estimand == "rate" else measure.lower()
    new_key = f"{key}_new"
    n = len(rows)
    if ax is None:
        _, ax = figures.new(forest_size(res))
    y = np.arange(n + 5)[::-1].astype(float)
    labels = []
    for j, (sid, o, ol, oh, sl, sm, sh, counts) in enumerate(rows):
        yy = y[j]
        if np.isfinite(o):
            ax.errorbar(o, yy + 0.15, xerr=[[o - ol], [oh - o]], fmt="s", color="0.55", ms=4, capsize=2,
                        label="observed (95% CI)" if j == 0 else None)
        ax.errorbar(sm, yy - 0.15, xerr=[[sm - sl], [sh - sm]], fmt="o", color="C0", ms=4, capsize=2,
                    label="Bayesian shrunken (95% CrI)" if j == 0 else None)
        labels.append(f"{sid}  ({counts})")
    base = n
    pooled, pred = s[key], s[new_key]
    if res.k == 1:  # one study is not a meta-analysis: no pooled diamond, and the rows say so
        ax.errorbar(pooled["q50"], y[base], xerr=[[pooled["q50"] - pooled["q025"]], [pooled["q975"] - pooled["q50"]]],
                    fmt="o", color="C3", capsize=3)
        labels.append("single study: no pooling (posterior, 95% CrI)")
        labels.append("prediction, new study: rests on the tau prior alone")
    else:
        ax.fill([pooled["q025"], pooled["q50"], pooled["q975"], pooled["q50"]],
                [y[base], y[base] + 0.25, y[base], y[base] - 0.25], color="C3", label="Bayesian pooled")
        labels.append("Bayesian pooled" + (f" ({_risk_label(res)})" if key == "rr" else ""))
        ax.errorbar(pred["q50"], y[base + 1], xerr=[[pred["q50"] - pred["q025"]], [pred["q975"] - pred["q50"]]],
                    fmt="d", color="C3", mfc="white", capsize=3)
        labels.append("prediction, new study")
    if freq is not None:
        f = freq
        ax.errorbar(f["estimate"], y[base + 2], xerr=[[f["estimate"] - f["ci_low"]], [f["ci_high"] - f["estimate"]]],
                    fmt="^", color="C2", capsize=3)
        labels.append(f"frequentist {f['label']}")
    else:
        labels.append("frequentist: not estimable")
    if abstract_row is not None:
        a = abstract_row
        ax.errorbar(a.estimate, y[base + 3], xerr=[[max(a.estimate - a.ci_low, 0)], [a.ci_high - a.estimate]], fmt="v",
                    color="C1", capsize=3)
        labels.append(source.short() if source is not None else "published")
    elif source is not None:
        labels.append(f"{source.label}: not printed")
    else:
        labels.append("")
    labels.append("")
    ax.set_yticks(y[: len(labels)], labels)
    ax.axhline(y[base] + 0.6, color="0.8", lw=0.8)
    if key != "rate":
        _log_axis(ax)
        ax.axvline(1, color="0.5", lw=0.8, ls="--")
    desc = res.description
    xl = {"rate": f"event rate ({desc.treatment} arm)", "or": f"odds ratio ({desc.comparison()})",
          "rr": f"risk ratio ({desc.comparison()})"}
    ax.set_xlabel(xl[key])
    studies = f"k = {res.k}" if res.k > 1 else "a single study"
    ax.set_title(f"{desc.label(res.config.outcome)}: {res.config.model} model, {studies}, tau ~ {res.config.tau_prior}")
    ax.legend(loc="lower right", fontsize=7)
    return ax


def densities(res: FitResult, axes=None):
    """Posterior densities of mu and tau with the prior overlaid, on two axes (returned)."""
    from .summaries import kde

    pri = res.config.priors()
    if axes is None:
        _, axes = figures.new((9, 3), 1, 2)
    for ax, name, prior in ((axes[0], "mu", pri["effect"]), (axes[1], "tau", pri["tau"])):
        x = res.idata.posterior[name].values.ravel()
        kx, ky = kde(x, bound_correction=(name == "tau"))
        ax.plot(kx, ky, color="C0", label="posterior")
        lo, hi = (max(kx[0] - 0.5 * (kx[-1] - kx[0]), 0 if name == "tau" else -np.inf), kx[-1] + 0.5 * (kx[-1] - kx[0]))
        g = np.linspace(lo if np.isfinite(lo) else kx[0] - 1, hi, 300)
        if name == "tau":
            g = g[g > 0]
        ax.plot(g, np.nan_to_num(np.exp(prior.logpdf(g)), posinf=0.0), color="C1", ls="--", label=f"prior {prior.spec}")
        mu_label = ("mu (logit rate)" if res.config.kind.estimand == "rate"
                    else f"mu (log {res.config.effect_measure})")
        ax.set_xlabel({"mu": mu_label, "tau": "tau"}[name])
        ax.legend(fontsize=7)
    return axes


def _risk_label(res: FitResult) -> str:
    """The control risk an RR is conditional on, short enough for a label."""
    cr = res.control_risk
    return {"median": f"at control risk {cr.value:.2g}" if cr.value is not None else "",
            "given": f"at control risk {cr.value:g}" if cr.value is not None else "",
            "mean-draws": "at the mean study control risk", "marginal": "population-averaged"}.get(cr.mode, "")


def benefit_curve(res: FitResult, measure: str, ax=None):
    """P(ratio < x) against x, for the pooled effect and for a new study."""
    key = measure.lower()
    x = np.geomspace(0.2, 5, 200)
    if ax is None:
        _, ax = figures.new((5.5, 3.4))
    for pred, style in ((False, "-"), (True, "--")):
        d = res.draws(key, predictive=pred).ravel()
        ax.plot(x, (d[:, None] < x[None, :]).mean(axis=0), style, color="C0",
                label="new study" if pred else "pooled effect")
    _log_axis(ax)
    ax.axvline(1, color="0.5", lw=0.8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{measure} threshold x" + (f" ({_risk_label(res)})" if key == "rr" else ""))
    ax.set_ylabel(f"P({measure} < x | data)")
    ax.set_title(f"{res.description.label(res.config.outcome)}: probability of the {measure} being below x")
    ax.legend(fontsize=8)
    return ax


def prior_forest(rows: list[dict], ax=None, ax_prob=None):
    """One outcome x model of a sensitivity grid: the effect's posterior median and 95% CrI per configuration
    (prior | effect prior | inclusion set), and on ``ax_prob`` (ratios) P(ratio < t) per configuration.

    Returns
    -------
    matplotlib Axes
        ``ax`` (the forest).
    """
    if ax is None:
        _, ax = figures.new((8, 0.45 * len(rows) + 1.6))
    rs = rows
    oc, m, eff = rs[0]["outcome"], rs[0]["model"], rs[0]["effect"]
    labels = [f"{r['tau_prior']} | {r['effect_prior']} | {r['inclusion']} (k={r['k']})" for r in rs]
    y = np.arange(len(rs))[::-1]
    med = np.array([r["effect_median"] for r in rs])
    lo = np.array([r["effect_low"] for r in rs])
    hi = np.array([r["effect_high"] for r in rs])
    ax.errorbar(med, y, xerr=[med - lo, hi - med], fmt="s", color="k", capsize=3)
    ax.set_yticks(y, labels, fontsize=8)
    if eff != "rate":
        _log_axis(ax)
        ax.axvline(1, color="grey", lw=0.8, ls="--")
    ax.set_xlabel(f"{eff}: posterior median and 95% CrI")
    ax.set_title(f"{oc} ({m}): sensitivity to the priors")
    if ax_prob is not None:
        from .sensitivity import probability_keys, probability_label

        for key in probability_keys(rs[0]):
            ax_prob.plot([r[key] for r in rs], y, "o", label=probability_label(key))
        ax_prob.set_yticks(y, [""] * len(y))
        ax_prob.set_xlim(-0.02, 1.02)
        ax_prob.set_xlabel("posterior probability")
        ax_prob.legend(fontsize=8, loc="best")
        ax_prob.set_title(f"P(benefit) per prior ({rs[0].get('benefit', 'fewer events')} are better)")
    return ax


def tau_prior_posterior(rows: list[dict], axes=None):
    """Prior and posterior densities of tau, one panel per tau prior (its first row: first inclusion set and
    effect prior). ``axes``: at least as many as tau priors; the rest are hidden.

    Returns
    -------
    ndarray of matplotlib Axes
    """
    first: dict[str, dict] = {}
    for r in rows:
        first.setdefault(r["tau_prior"], r)
    if axes is None:
        cols = min(4, len(first))
        _, axes = figures.new((3.4 * cols, 2.6 * math.ceil(len(first) / cols)), math.ceil(len(first) / cols), cols,
                              squeeze=False)
    flat = np.asarray(axes).ravel()
    for ax, (tp, r) in zip(flat, first.items()):
        d = r["tau_density"]
        ax.plot(d["grid"], d["posterior"], color="C0", label="posterior")
        ax.plot(d["grid"], d["prior"], color="C1", ls="--", label="prior")
        ax.set_title(tp, fontsize=9)
        ax.set_xlabel("tau")
    for ax in flat[len(first):]:
        ax.set_visible(False)
    flat[0].legend(fontsize=8)
    return axes


def subgroup_forest(res: FitResult, column: str, freq=None, comparisons=(), ax=None):
    """Studies grouped by the levels of ``column`` (observed and shrunken effects), each level's effect (diamond:
    posterior median and 95% CrI; a level with one study is shown, not pooled), and below the title the
    frequentist test for subgroup differences (``freq``: :class:`rescuemeta.metareg.SubgroupResult`) and
    P(larger benefit than the reference level) (``comparisons``: :func:`rescuemeta.pipeline._comparisons`)."""
    s = res.summary()
    rate = res.config.kind.estimand == "rate"
    rows = {r[0]: r for r in _study_effects(res, "OR")}
    values = res.data.selection.columns([column])[column]
    pos = {sid: i for i, sid in enumerate(res.data.selection.study_ids)}
    level_of = {sid: str(values[pos[sid]]).strip() for sid in res.data.study_ids}
    levels = list(s["subgroups"])
    n_rows = len(rows) + 2 * len(levels)
    if ax is None:
        _, ax = figures.new((8.5, 0.4 * n_rows + 1.6))
    y = float(n_rows)
    ticks, labels = [], []
    for lv in levels:
        sub = s["subgroups"][lv]
        ticks.append(y)
        labels.append(f"{column} = {lv} (k = {sub['k']})")
        y -= 1
        for sid in [sid for sid in res.data.study_ids if level_of[sid] == lv]:
            _, o, ol, oh, sl, sm, sh, counts = rows[sid]
            if np.isfinite(o):
                ax.errorbar(o, y + 0.15, xerr=[[o - ol], [oh - o]], fmt="s", color="0.55", ms=4, capsize=2)
            ax.errorbar(sm, y - 0.15, xerr=[[sm - sl], [sh - sm]], fmt="o", color="C0", ms=4, capsize=2)
            ticks.append(y)
            labels.append(f"   {sid}  ({counts})")
            y -= 1
        nat = sub["natural"]
        if sub["k"] > 1:
            ax.fill([nat["q025"], nat["q50"], nat["q975"], nat["q50"]], [y, y + 0.25, y, y - 0.25], color="C3")
            labels.append(f"   {lv}: Bayesian (95% CrI)")
        else:
            labels.append(f"   {lv}: a single study, not pooled")
        ticks.append(y)
        y -= 1
    ax.set_yticks(ticks, labels)
    if not rate:
        _log_axis(ax)
        ax.axvline(1, color="0.5", lw=0.8, ls="--")
    desc = res.description
    ax.set_xlabel(f"event rate ({desc.treatment} arm)" if rate else f"odds ratio ({desc.comparison()})")
    notes = []
    if freq is not None:
        notes.append(f"frequentist test for subgroup differences (REML): Q = {freq.q_between:.2f}, df = "
                     f"{freq.q_between_df}, p = {freq.q_between_pval:.2g}")
    for c in comparisons:
        what = "a lower rate" if rate and c["benefit"] == "fewer events" else "a higher rate" if rate else \
            "a larger benefit"
        notes.append(f"P({what} in {c['level']} than {c['reference']}) = {100 * c['probability']:.0f}%")
    ax.set_title(f"{desc.label(res.config.outcome)} by {column}: {res.config.model} model, shared tau\n"
                 + "\n".join(notes), fontsize=9)
    return ax


def bubble(res: FitResult, column: str, ax=None):
    """Observed study effects against a numeric moderator (marker area proportional to the inverse variance) and
    the posterior meta-regression line (median, 95% CrI band) with the other moderators at their mean."""
    dsg = res.data.design
    j = dsg.names.index(column)
    x = dsg.X[:, j]
    rate = res.config.kind.estimand == "rate"
    sel = res.data.selection
    pos = {sid: i for i, sid in enumerate(sel.study_ids)}
    idx = [pos[sid] for sid in res.data.study_ids]
    ai, n1i, ci, n2i = sel.counts()
    es = escalc("PLO" if rate else "OR", ai[idx], n1i[idx], None if ci is None else ci[idx],
                None if n2i is None else n2i[idx], ContinuityCorrection())
    nat = expit if rate else np.exp
    if ax is None:
        _, ax = figures.new((6, 4))
    ok = np.isfinite(es.yi)
    w = 1 / es.vi[ok]
    ax.scatter(x[ok], nat(es.yi[ok]), s=20 + 300 * w / w.max(), color="0.5", alpha=0.6, edgecolor="k",
               label="studies (area: 1 / variance)")
    grid = np.linspace(x.min(), x.max(), 60)
    centre = res.data.centre
    assert centre is not None
    c0 = np.zeros(len(dsg.names))
    c0[0] = 1.0  # the centred intercept: other moderators at their mean (reference levels)
    band = []
    for g in grid:
        c = c0.copy()
        c[j] = g - centre[j]
        d = res.linear_draws(c).ravel()
        band.append(np.quantile(d, [0.025, 0.5, 0.975]))
    b = nat(np.array(band))
    ax.plot(grid, b[:, 1], color="C3", label="posterior median")
    ax.fill_between(grid, b[:, 0], b[:, 2], color="C3", alpha=0.2, label="95% CrI")
    if not rate:
        ax.set_yscale("log")
        ax.axhline(1, color="0.5", lw=0.8, ls="--")
    desc = res.description
    ax.set_xlabel(column)
    ax.set_ylabel(f"event rate ({desc.treatment} arm)" if rate else f"odds ratio ({desc.comparison()})")
    ax.set_title(f"{desc.label(res.config.outcome)}: meta-regression on {column} ({res.config.model} model)",
                 fontsize=9)
    ax.legend(fontsize=7)
    return ax


def funnel(yi, vi, estimate: float, measure: str, egger: dict | None = None, note: str | None = None, ax=None):
    """Contour-enhanced funnel plot (Peters et al. 2008): each study's estimate (natural scale, log axis for ratios)
    against its standard error (inverted axis), with the regions where a study's own two-sided p-value is below
    0.01, 0.05 and 0.10 shaded, and the pooled ``estimate``. Asymmetry concentrated in the significant regions
    suggests small-study effects; the Egger test (``egger``, :func:`rescuemeta.criticism.regtest`) or the reason it
    was not run (``note``) goes in the title."""
    yi, vi = np.asarray(yi, dtype=float), np.asarray(vi, dtype=float)
    se = np.sqrt(vi)
    if ax is None:
        _, ax = figures.new((6, 4.5))
    top = float(se.max()) * 1.1
    s = np.linspace(0, top, 100)
    ratio = measure in ("OR", "RR")
    nat = np.exp if ratio else (lambda x: x)
    # darkest where a study's own p < 0.01, lighter for p < 0.05 and p < 0.10, white where p >= 0.10
    ax.set_facecolor("0.62")
    for z, shade in ((2.576, "0.76"), (1.960, "0.88"), (1.645, "white")):
        ax.fill_betweenx(s, nat(-z * s), nat(z * s), color=shade, zorder=0)
    ax.plot(nat(estimate - 1.96 * s), s, color="0.4", lw=0.8, ls="--")
    ax.plot(nat(estimate + 1.96 * s), s, color="0.4", lw=0.8, ls="--")
    ax.axvline(nat(estimate), color="C3", lw=1, label="pooled estimate")
    ax.scatter(nat(yi), se, color="C0", edgecolor="k", zorder=3, label="studies")
    ax.set_ylim(top, 0)
    if ratio:
        _log_axis(ax)
    ax.set_ylabel("standard error")
    ax.set_xlabel({"OR": "odds ratio", "RR": "risk ratio"}.get(measure, measure))
    title = "Funnel plot (white: study p >= 0.10; light to dark: p < 0.10 / 0.05 / 0.01)"
    if egger is not None:
        title += f"\nEgger test: z = {egger['z']:.2f}, p = {egger['pval']:.2g}"
    elif note:
        title += f"\n{note}"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return ax


def loo_forest(rows: list[dict], full: dict, measure: str, query: str, ax=None):
    """The pooled effect with each study left out (``rows``: :func:`rescuemeta.criticism.loo_benefit`), with the
    probability of the query (benefit) without it at the right, and the full analysis (``full``: q025/q50/q975
    and ``probability``) on top."""
    n = len(rows)
    if ax is None:
        _, ax = figures.new((7.5, 0.4 * (n + 2) + 1.2))
    y = np.arange(n + 1)[::-1].astype(float)
    ax.errorbar(full["q50"], y[0], xerr=[[full["q50"] - full["q025"]], [full["q975"] - full["q50"]]], fmt="D",
                color="C3", capsize=3)
    labels = [f"all studies   P = {100 * full['probability']:.0f}%"]
    for j, r in enumerate(rows, 1):
        ax.errorbar(r["q50"], y[j], xerr=[[r["q50"] - r["q025"]], [r["q975"] - r["q50"]]], fmt="o", color="C0",
                    capsize=2)
        labels.append(f"without {r['study_id']}   P = {100 * r['probability']:.0f}%")
    ax.set_yticks(y, labels)
    if measure != "rate":
        _log_axis(ax)
        ax.axvline(1, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel(measure if measure != "rate" else "event rate")
    ax.set_title(f"Leave one study out: pooled {measure} (95% CrI) and P({query})", fontsize=9)
    return ax


def cumulative_plot(steps: list[dict], measure: str, order: str | None = None, ax=None):
    """Cumulative meta-analysis (:func:`rescuemeta.criticism.cumulative`): the pooled estimate and 95% CI as each
    study is added (natural scale)."""
    n = len(steps)
    if ax is None:
        _, ax = figures.new((7, 0.35 * n + 1.5))
    nat = np.exp if measure in ("OR", "RR") else (lambda x: x)
    y = np.arange(n)[::-1].astype(float)
    for j, st in enumerate(steps):
        est = float(nat(st["estimate"]))
        lo, hi = float(nat(st["ci_low"])), float(nat(st["ci_high"]))
        ax.errorbar(est, y[j], xerr=[[est - lo], [hi - est]], fmt="s", color="C2", capsize=2)
    ax.set_yticks(y, [f"+ {st['study_id']} (k = {st['k']})" for st in steps])
    if measure in ("OR", "RR"):
        _log_axis(ax)
        ax.axvline(1, color="0.5", lw=0.8, ls="--")
    ax.set_xlabel(f"{measure} (frequentist, cumulative)")
    ax.set_title("Cumulative meta-analysis" + (f", studies added by {order}" if order else ""), fontsize=9)
    return ax


def bias_plot(curve: list[dict], query: str, threshold: float, tipping: dict | None = None,
              named: dict[str, float] | None = None, ax=None):
    """P(query) against the mean bias of the non-randomised rows (:func:`rescuemeta.bias.bias_curve`), with the
    threshold, the tipping point and the named bias priors' means marked."""
    if ax is None:
        _, ax = figures.new((6.5, 4))
    m = np.array([c["bias_mean"] for c in curve])
    p = np.array([c["probability"] for c in curve])
    ax.plot(np.exp(m), p, color="C0")
    ax.axhline(threshold, color="C3", lw=0.8, ls="--", label=f"threshold {threshold:g}")
    ax.axvline(1, color="0.5", lw=0.8, ls=":")
    if tipping and tipping.get("bias_mean") is not None:
        ax.plot(np.exp(tipping["bias_mean"]), threshold, "o", color="C3",
                label=f"tipping point: ratio of ratios {np.exp(tipping['bias_mean']):.2f}")
    for j, (name, mean) in enumerate((named or {}).items()):
        ax.axvline(np.exp(mean), color=f"C{j + 1}", lw=0.8, label=f"{name} (mean)")
    _log_axis(ax)
    ax.set_xlabel("mean bias of each non-randomised study (ratio of odds ratios, observed / true)")
    ax.set_ylabel(f"P({query})")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7, loc="best")
    ax.set_title(f"How much bias would change P({query})?", fontsize=9)
    return ax
