"""The summary of findings (GRADE practice; Cochrane Handbook ch. 14): one line per outcome that answers "does it
help, how much, how sure, and how solid is the evidence" in words a clinician reads: the relative effect with its
95% CrI, the probability of benefit and of a clinically important benefit (in the outcome's declared direction),
the absolute effect per 1000 at the median study's control risk, the evidence behind it, and caveats computed
from the data and the fits (a single study or few studies, non-randomised comparisons, a prediction interval
that spans benefit and harm, an answer that moves across the prior grid, no comparative data, a failed fit)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["FEW_STUDIES", "answer_words", "summary_of_findings"]

FEW_STUDIES = 5  # fewer comparative studies than this: the between-study SD rests mostly on its prior


def answer_words(p_benefit: float | None) -> str:
    """Plain words for a probability of benefit: likely (>= 0.95) / possible (>= 0.8) benefit or harm, else
    uncertain."""
    if p_benefit is None:
        return "no comparative estimate"
    if p_benefit >= 0.95:
        return "likely benefit"
    if p_benefit >= 0.8:
        return "possible benefit"
    if p_benefit <= 0.05:
        return "likely harm"
    if p_benefit <= 0.2:
        return "possible harm"
    return "uncertain"


def _ci(stat: dict, fmt: str = ".2f") -> str:
    return f"{stat['q50']:{fmt}} ({stat['q025']:{fmt}} to {stat['q975']:{fmt}})"


def _grid_range(grid_rows: Sequence[dict], outcome: str, model: str) -> tuple[float, float, int] | None:
    """Range of P(benefit at ratio 1) across the prior grid's rows of one outcome x model."""
    from .sensitivity import probability_keys

    vals = []
    for r in grid_rows:
        if r.get("outcome") == outcome and r.get("model") == model and r.get("status") == "ok":
            keys = [k for k in probability_keys(r) if k.endswith("_lt_1") or k.endswith("_gt_1")]
            if keys and r.get(keys[0]) is not None:
                vals.append(float(r[keys[0]]))
    return (min(vals), max(vals), len(vals)) if vals else None


def summary_of_findings(entries: Sequence, description, grid_rows: Sequence[dict] = ()) -> list[dict]:
    """One row per outcome of a pipeline run (:func:`rescuemeta.pipeline.run`).

    Parameters
    ----------
    entries : sequence of pipeline.Entry
        The outcome x model results; a ratio model (contrast, else normal) answers for its outcome, the proportion
        model where there is no comparative fit.
    description : Description
        Labels, which direction is benefit, and whether the comparisons are randomised.
    grid_rows : sequence of dict, optional
        Prior-sensitivity rows (:func:`rescuemeta.sensitivity.run_grid`) for the "answer moves across priors"
        caveat.

    Returns
    -------
    list of dict
        Per outcome: ``outcome`` (label), ``name``, ``model``, ``evidence`` (k and design), ``effect`` (relative
        effect, or the event rate where there is no comparison), ``p_benefit`` and ``p_important`` (None without
        a comparison) with ``important`` (the threshold in words), ``absolute`` (per 1000 at the median study's
        control risk), ``answer`` (:func:`answer_words`) and ``caveats`` (a list of short sentences).
    """
    from .queries import probability
    from .reanalyze import default_important

    by_outcome: dict[str, list] = {}
    for e in entries:
        by_outcome.setdefault(e.outcome, []).append(e)
    rows = []
    for outcome, es in by_outcome.items():
        better = description.better(outcome)
        higher = better == "higher"
        ratio = [e for e in es if e.result is not None and e.config.kind.estimand == "ratio"]
        failed = [e for e in es if e.failure is not None]
        chosen = ratio[0] if ratio else next((e for e in es if e.result is not None), None)
        caveats: list[str] = []
        if failed:
            caveats.append("fit failed its convergence guard: " + ", ".join(e.model for e in failed))
        row = {"outcome": description.label(outcome), "name": outcome, "model": None, "evidence": "—",
               "effect": "—", "p_benefit": None, "p_important": None, "important": None, "absolute": "—"}
        if chosen is None:
            rows.append({**row, "answer": "no estimate", "caveats": caveats or ["no usable data"]})
            continue
        res = chosen.result
        s = res.summary()
        k = s["k"]
        row["model"] = chosen.model
        if chosen.config.kind.estimand == "ratio":
            m = chosen.measure
            row["evidence"] = "a single comparative study" if k == 1 else f"{k} comparative studies"
            row["effect"] = f"{m} {_ci(s[m.lower()])}"
            q = f"{m} > 1" if higher else f"{m} < 1"
            r_imp = default_important(better)
            q_imp = f"{m} {'>' if higher else '<'} {r_imp:g}"
            row["p_benefit"] = probability(res, q)["probability"]
            row["p_important"] = probability(res, q_imp)["probability"]
            row["important"] = q_imp
            ab = s.get("absolute") or []
            if ab:
                a = ab[len(ab) // 2]  # the median study's control risk
                rd = a["rd_per_1000"]
                word = "more" if rd["q50"] > 0 else "fewer"
                row["absolute"] = (f"{abs(rd['q50']):.0f} {word} per 1000 ({rd['q025']:+.0f} to {rd['q975']:+.0f}) "
                                   f"at a control risk of {a['control_per_1000']:.0f} per 1000")
            if k == 1:
                caveats.append("a single study: no pooling, and the new-study prediction rests on the tau prior")
            elif k < FEW_STUDIES:
                caveats.append(f"few studies (k = {k}): the between-study SD rests mostly on its prior")
            sel = res.data.selection
            n_rnd = int(sum(r for sid, r in zip(sel.study_ids, sel.randomised) if sid in set(res.data.study_ids)))
            if description.randomised is False or ("design" in sel.frame and n_rnd == 0):
                caveats.append("non-randomised comparisons (confounding by indication possible)")
            elif "design" in sel.frame and n_rnd < k:
                caveats.append(f"{k - n_rnd} of {k} comparisons non-randomised")
            if s["inclusion"].get("k_reported"):
                caveats.append(f"{s['inclusion']['k_reported']} of {k} studies enter by their reported (adjusted) OR")
            new = s.get(f"{m.lower()}_new")
            if new and new["q025"] < 1 < new["q975"]:
                caveats.append(f"a new study could show benefit or harm (95% PrI {new['q025']:.2f} to "
                               f"{new['q975']:.2f})")
            rng = _grid_range(grid_rows, outcome, chosen.model)
            if rng is not None and rng[2] > 1 and (rng[0] < 0.5 < rng[1] or rng[1] - rng[0] > 0.2):
                caveats.append(f"the answer depends on the tau prior: P(benefit) {rng[0]:.2f} to {rng[1]:.2f} across "
                               f"{rng[2]} priors")
        else:
            row["evidence"] = f"{k} single-arm series" if k > 1 else "a single series"
            row["effect"] = f"event rate, median study {_ci(s['rate'], '.1%')}"
            caveats.append("no control arm: no comparative effect can be estimated")
        rows.append({**row, "answer": answer_words(row["p_benefit"]), "caveats": caveats})
    return rows
