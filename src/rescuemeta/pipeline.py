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
from typing import TYPE_CHECKING

from .data import StudyTable, select
from .errors import ConvergenceError, InputError

if TYPE_CHECKING:  # the fitting stack (PyMC) loads when a run starts, not on import
    from .fit import FitConfig, FitResult
    from .spec import PrimarySpec

__all__ = ["Reference", "Entry", "PrimaryRun", "reported_measure", "frequentist_reference", "mirror_query",
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
class PrimaryRun:
    table: StudyTable
    spec: PrimarySpec
    entries: list[Entry]

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
    from .freq import meta_analyze

    method = cfg.kind.reference_method
    sel = select(table, cfg.outcome, arms="one" if measure == "PLO" else "two", all_studies=cfg.all_studies,
                 exclude_basis=tuple(cfg.exclude_basis))
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
    return PrimaryRun(table=table, spec=spec, entries=entries)
