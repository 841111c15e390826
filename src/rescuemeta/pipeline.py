"""The pipeline: one primary analysis of a study table, as a spec names it (every outcome x model), run the same
way for ``rescuemeta fit --all`` and ``rescuemeta analyze``:

select -> fit (or a cached fit) -> summarise -> probability queries -> frequentist reference,

with every outcome x model ending in exactly one of three states (:class:`Entry`): fitted, not estimable from
these data (``unavailable``, e.g. no control arms), or failed its convergence guard (``failure``, with the
diagnostics). The command line and the report only format what this returns.

The frequentist reference is one choice, labelled with its method wherever it is shown: REML on the measure the
Bayesian ratio is reported on (RR when the published estimates give an RR for the outcome, else the spec's
measure), and the binomial-normal GLMM (ML) for event rates, the methods metafor users would reach for.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from .data import StudyTable, select
from .errors import ConvergenceError, InputError

if TYPE_CHECKING:  # the fitting stack (PyMC) loads when a run starts, not on import
    from .fit import FitConfig, FitResult
    from .spec import PrimarySpec

__all__ = ["Reference", "Entry", "ModeratedEntry", "moderated_entry", "PrimaryRun", "reported_measure",
           "frequentist_reference", "mirror_query",
           "probability_rows", "run"]



@dataclass(frozen=True)
class Reference:
    """A frequentist pooled estimate on the natural scale (ratio or rate), with its method and k."""

    measure: str
    method: str
    k: int
    estimate: float
    ci_low: float
    ci_high: float

    @property
    def label(self) -> str:
        return f"{'rate' if self.measure == 'PLO' else self.measure} {self.method} (k={self.k})"

    def to_dict(self) -> dict:
        return {"measure": self.measure, "method": self.method, "k": self.k, "estimate": self.estimate,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "label": self.label}


@dataclass
class Entry:
    """One outcome x model of the analysis, in exactly one state: ``result`` (fitted), ``unavailable`` (the
    reason the data cannot support it) or ``failure`` (``reason`` and the convergence ``diagnostics``)."""

    config: FitConfig
    measure: str  # the scale the Bayesian estimate is reported on: OR/RR for ratios, PLO for rates
    result: FitResult | None = None
    unavailable: str | None = None
    failure: dict | None = None
    reference: Reference | None = None
    reference_note: str | None = None  # why there is no frequentist reference
    probabilities: list[dict] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        return self.config.outcome

    @property
    def model(self) -> str:
        return self.config.model

    @property
    def key(self) -> str:
        """The summary key of the reported quantity: ``or``, ``rr`` or ``rate``."""
        return "rate" if self.measure == "PLO" else self.measure.lower()


@dataclass
class ModeratedEntry:
    """One outcome x model x moderator column of the spec's ``subgroups`` (text columns, summarised per level)
    or ``moderators`` (numeric columns, a meta-regression), in one state: fitted (``result``), ``unavailable``
    (why the data cannot support it) or ``failure``. Subgroups also carry the frequentist per-level fits and
    between-subgroup test (``freq``, :class:`rescuemeta.metareg.SubgroupResult`, REML) and ``comparisons``: each
    level against the reference level, P(the benefit is larger there) in the outcome's declared direction."""

    config: FitConfig
    column: str
    kind: str  # "subgroup" or "moderator"
    result: FitResult | None = None
    unavailable: str | None = None
    failure: dict | None = None
    freq: object = None
    comparisons: list[dict] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        return self.config.outcome

    @property
    def model(self) -> str:
        return self.config.model


@dataclass
class PrimaryRun:
    table: StudyTable
    spec: PrimarySpec
    entries: list[Entry]
    moderated: list[ModeratedEntry] = field(default_factory=list)

    @property
    def fitted(self) -> list[Entry]:
        return [e for e in self.entries if e.result is not None]

    @property
    def unavailable(self) -> list[dict]:
        return [{"outcome": e.outcome, "model": e.model, "reason": e.unavailable}
                for e in self.entries if e.unavailable is not None]

    @property
    def failures(self) -> list[dict]:
        return [{"outcome": e.outcome, "model": e.model, **e.failure} for e in self.entries if e.failure is not None]

    @property
    def probabilities(self) -> list[dict]:
        return [row for e in self.entries for row in e.probabilities]


def reported_measure(model: str, outcome: str, abstract: Sequence, default: str = "OR") -> str:
    """The scale a model's estimate is reported and compared on: PLO for rates; for ratios the published
    estimate's (RR before OR) when one exists for the outcome, else ``default`` (the spec's measure)."""
    from . import kinds

    mk = kinds.get(model)
    if mk.estimand == "rate":
        return mk.measures[0]
    if len(mk.measures) > 1:  # fitted on the measure the spec names
        return mk.measure(default)
    for q in ("RR", "OR"):
        if any(a.outcome == outcome and a.quantity == q for a in abstract):
            return q
    return default if default in ("OR", "RR") else "OR"


def frequentist_reference(table: StudyTable, cfg, measure: str) -> Reference:
    """The frequentist estimate beside a Bayesian fit: the kind's ``reference_method`` (REML for ratios, GLMM for
    rates; :mod:`rescuemeta.kinds`) on the same inclusion set. Raises InputError or ValueError when the data
    cannot support it."""
    from .effects import ContinuityCorrection
    from .freq import meta_analyze, rma_iv

    method = cfg.kind.reference_method
    reported = (cfg.kind.reads_estimates and cfg.effects == "reported" and measure in ("OR", "RR")
                and method in ("DL", "REML", "PM"))
    sel = select(table, cfg.outcome, arms="one" if measure == "PLO" else "two", all_studies=cfg.all_studies,
                 exclude_basis=tuple(cfg.exclude_basis), effects="reported" if reported else "counts",
                 measure=measure if reported else None)
    if sel.reported.any():  # reported estimates as metafor's rma(yi, sei = ...) rows
        yi, vi, _ = sel.effect_sizes(measure, ContinuityCorrection())
        fr = rma_iv(yi, vi, method=method, measure=measure)
    else:
        fr = meta_analyze(measure, method, *sel.counts(), cc=ContinuityCorrection())
    nat = fr.natural
    return Reference(measure=measure, method=method, k=fr.k, estimate=nat["estimate"], ci_low=nat["ci_low"],
                     ci_high=nat["ci_high"])


def mirror_query(text: str) -> str:
    """``RR < 0.8`` -> ``RR > 1.25`` (and RD < -x -> RD > x): the same benefit for an outcome where more events
    are better."""
    from .queries import parse_query

    q = parse_query(text)
    op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}[q.op]
    if q.scale in ("OR", "RR"):
        return f"{q.scale} {op} {1 / q.value:.4g}"
    if q.scale == "RD":
        return f"RD {op} {-q.value:.4g}"
    return text


def probability_rows(res, queries: Sequence[str], better: str | None) -> list[dict]:
    """The spec's queries on one contrast fit, pooled and predictive, mirrored where more events are better
    (``better == "higher"``; undescribed outcomes take fewer events as better)."""
    from .queries import probability

    higher = better == "higher"
    rows = []
    for qtext in queries:
        q = mirror_query(qtext) if higher else qtext
        for pred in (False, True):
            r = probability(res, q, predictive=pred)
            mode = r.get("baseline_risk_mode")  # what an RR/RD/NNT is conditional on
            risk = (None if mode is None else mode if r["baseline_risk"] is None
                    else f"{r['baseline_risk']:.3g} ({mode})")
            rows.append({"outcome": res.config.outcome, "query": q, "predictive": pred,
                         "probability": r["probability"], "mcse": r["mcse"], "draws": r["draws"],
                         "benefit": "more events" if higher else "fewer events", "control_risk": risk})
    return rows


def run(table: StudyTable, spec, *, abstract: Sequence = (), draws: int | None = None, seed: int | None = None,
        backend: str = "nutpie", sampler=None, cache_dir: str | Path | None = None,
        progress: Callable[[int, int, FitConfig], None] | None = None) -> PrimaryRun:
    """Run every outcome x model of ``spec`` on ``table``.

    Parameters
    ----------
    abstract : sequence of PrintedEstimate
        Published estimates: they choose the ratio a contrast fit is reported on (RR before OR).
    draws, seed : int, optional
        Override the spec's.
    cache_dir : path, optional
        Reuse and store fits there (:func:`rescuemeta.fit.fit_cached`); None fits afresh.
    progress : callable, optional
        Called as ``progress(i, n, config)`` before the i-th of n fits (1-based).

    Returns
    -------
    PrimaryRun
        One :class:`Entry` per outcome x model, in the spec's order.
    """
    from .fit import fit, fit_cached
    from .sampling import default_sampler

    configs = spec.configs(table.outcomes, draws=draws, seed=seed, backend=backend)
    sampler = sampler or default_sampler(backend)
    desc = table.description
    entries = []
    for i, cfg in enumerate(configs, 1):
        if progress is not None:
            progress(i, len(configs), cfg)
        e = Entry(config=cfg, measure=reported_measure(cfg.model, cfg.outcome, abstract, spec.measure))
        try:
            e.result = (fit_cached(table, cfg, Path(cache_dir), sampler) if cache_dir is not None
                        else fit(table, cfg, sampler))
        except InputError as err:
            e.unavailable = err.message
        except ConvergenceError as err:
            e.failure = {"reason": str(err), "diagnostics": err.diagnostics}
        if e.result is not None:
            try:
                e.reference = frequentist_reference(table, cfg, e.measure)
            except (InputError, ValueError) as err:
                e.reference_note = getattr(err, "message", str(err))
            if cfg.kind.estimand == "ratio":
                e.probabilities = probability_rows(e.result, spec.queries, desc.better(cfg.outcome))
        entries.append(e)
    # subgroups and moderators of the treatment effect: the ratio models (a rate's subgroups are not a comparison)
    moderated = [moderated_entry(table, e.config, col, kind, sampler, cache_dir)
                 for e in entries if e.result is not None and e.config.kind.estimand == "ratio"
                 for kind, cols in (("subgroup", spec.subgroups), ("moderator", spec.moderators)) for col in cols]
    return PrimaryRun(table=table, spec=spec, entries=entries, moderated=moderated)


MIN_LEVELS = 2  # a subgroup analysis needs at least two levels ...
MIN_PER_LEVEL = 2  # ... with at least two studies each (levels with one study are shown, not pooled)


def moderated_entry(table: StudyTable, base: FitConfig, column: str, kind: str, sampler=None,
                    cache_dir: str | Path | None = None) -> ModeratedEntry:
    """Fit ``base`` again by subgroups of ``column`` (``kind="subgroup"``) or with ``column`` as a moderator, on the
    same studies; an unavailable entry, saying why, when the data cannot support it (fewer than
    :data:`MIN_LEVELS` levels with :data:`MIN_PER_LEVEL` studies; a numeric moderator with fewer than four
    studies or two values)."""
    from dataclasses import replace

    from .fit import fit, fit_cached, prepare

    cfg = replace(base, subgroup=column, mods=(column,)) if kind == "subgroup" else replace(base, mods=(column,))
    entry = ModeratedEntry(config=cfg, column=column, kind=kind)
    try:
        prep = prepare(table, cfg)
    except InputError as err:
        entry.unavailable = err.message
        return entry
    dsg = prep.design
    if kind == "subgroup":
        if column not in dsg.levels:
            entry.unavailable = f"{column!r} is numeric: give it as a moderator, not a subgroup"
            return entry
        values = _level_values(prep, column)
        counts = {lv: values.count(lv) for lv in dsg.levels[column]}
        if sum(n >= MIN_PER_LEVEL for n in counts.values()) < MIN_LEVELS:
            entry.unavailable = ("too few studies per level to compare subgroups: " + ", ".join(
                f"{lv} {n}" for lv, n in counts.items()) + f" (needs {MIN_LEVELS} levels with {MIN_PER_LEVEL}+)")
            return entry
    elif column in dsg.levels or len(prep.study_ids) < 4 or len({tuple(r) for r in dsg.X[:, 1:]}) < 3:
        entry.unavailable = (f"{column!r} is not numeric: give it as a subgroup" if column in dsg.levels else
                             f"a meta-regression on {column} needs 4+ studies with 3+ distinct values")
        return entry
    try:
        entry.result = (fit_cached(table, cfg, Path(cache_dir), sampler) if cache_dir is not None
                        else fit(table, cfg, sampler))
    except InputError as err:
        entry.unavailable = err.message
        return entry
    except ConvergenceError as err:
        entry.failure = {"reason": str(err), "diagnostics": err.diagnostics}
        return entry
    if kind == "subgroup":
        entry.freq = _frequentist_subgroups(prep, cfg, column)
        entry.comparisons = _comparisons(entry.result, column, table.description.better(cfg.outcome))
    return entry


def _level_values(prep, column: str) -> list[str]:
    values = prep.selection.columns([column])[column]
    pos = {s: i for i, s in enumerate(prep.selection.study_ids)}
    return [str(values[pos[s]]).strip() for s in prep.study_ids]


def _frequentist_subgroups(prep, cfg, column: str):
    """metafor-style per-level REML fits and the between-subgroup Q on the same studies (log OR, or logit rate)."""
    import numpy as np

    from .effects import escalc
    from .metareg import subgroups

    sel = prep.selection
    pos = {s: i for i, s in enumerate(sel.study_ids)}
    idx = [pos[s] for s in prep.study_ids]
    ai, n1i, ci, n2i = sel.counts()
    measure = "PLO" if cfg.kind.estimand == "rate" else cfg.effect_measure
    if measure == "PLO":
        plo = escalc(measure, ai[idx], n1i[idx])
        yi, vi = plo.yi, plo.vi
    else:  # count rows by escalc, reported estimates as they are
        yi, vi, _ = sel.effect_sizes(measure)
        yi, vi = yi[idx], vi[idx]
    es = SimpleNamespace(yi=yi, vi=vi)
    ok = np.isfinite(es.yi)
    values = _level_values(prep, column)
    try:
        return subgroups(es.yi[ok], es.vi[ok], [v for v, g in zip(values, ok) if g], column=column, method="REML",
                         measure=measure)
    except InputError:
        return None


def _comparisons(res, column: str, better: str | None) -> list[dict]:
    """Each level against the reference level: P(the benefit is larger there) in the declared direction (for
    rates: P(the rate is lower there) when fewer events are better)."""
    from .queries import probability

    levels = res.data.design.levels[column]
    out = []
    higher = better == "higher"
    for lv in levels[1:]:
        q = f"diff({lv}, {levels[0]}) {'>' if higher else '<'} 0"
        r = probability(res, q)
        out.append({"level": lv, "reference": levels[0], "query": q, "probability": r["probability"],
                    "mcse": r["mcse"], "benefit": "more events" if higher else "fewer events"})
    return out
