"""What a data file is about: a TOML description beside the table, so that no word about a particular clinical
question lives in the package's code.

``studies.csv`` is described by ``studies.toml`` in the same folder (the same stem), or by the file given with
``--describe``; a file without a description is analysed in neutral words ("treatment", "control", the outcome's
name) with no evidence note. Every key is optional; unknown keys and wrong types are errors naming the file and
the key (exit code 2)::

    [dataset]
    title = "BCG vaccine against tuberculosis"
    treatment = "BCG vaccine"              # the arm counted in events_treat / total_treat
    control = "no vaccine"                 # the arm counted in events_control / total_control
    evidence_note = "12 trials from one registry ..."   # shown with every result
    report_note = "A longer paragraph for the report ..."
    turner_comparison = "nonpharma_vs_placebo"           # Turner et al. (2015) comparison type

    [outcomes.mortality]
    label = "Mortality at 90 days"
    better = "lower"                       # which direction is benefit: "higher" or "lower"
    turner = "all_cause_mortality"         # Turner et al. (2015) outcome type, for turner(matched)

The printed estimates that ``check`` compares against (``abstract_estimates.csv``) are described the same way
(``abstract_estimates.toml``): ``[source] label = "..."``, ``k = 30`` (the number of studies they pooled).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .tomlio import check_keys, read_toml

__all__ = ["BETTER", "OutcomeDescription", "Description", "SourceDescription", "sidecar", "load_description",
           "load_source"]

BETTER = ("higher", "lower")
_DATASET_KEYS = {"title": str, "treatment": str, "control": str, "evidence_note": str, "report_note": str,
                 "turner_comparison": str, "randomised": bool}
_OUTCOME_KEYS = {"label": str, "better": str, "turner": str}
_SOURCE_KEYS = {"label": str, "k": int, "citation": str}


@dataclass(frozen=True)
class OutcomeDescription:
    """One outcome: its label and which direction is benefit (``None``: not stated)."""

    name: str
    label: str
    better: str | None = None
    turner: str | None = None


@dataclass(frozen=True)
class Description:
    """A data file's description; the defaults are the neutral words used when there is none.

    Attributes
    ----------
    title : str or None
    treatment, control : str
        Names of the two arms ("treatment" and "control" unless described).
    evidence_note : str or None
        One or two sentences on what the evidence base is (and is not); shown with every result.
    report_note : str or None
        A longer paragraph for the HTML report.
    outcomes : dict of OutcomeDescription
    path : str or None
        The TOML file read, if any.
    randomised : bool or None
        Whether the comparative studies are randomised (None: not stated); the summary of findings flags
        non-randomised comparisons.
    """

    title: str | None = None
    treatment: str = "treatment"
    control: str = "control"
    evidence_note: str | None = None
    report_note: str | None = None
    outcomes: dict = field(default_factory=dict)
    path: str | None = None
    turner_comparison: str | None = None
    randomised: bool | None = None

    def turner(self, outcome: str) -> str | None:
        """The Turner et al. (2015) outcome type of ``outcome`` (for ``turner(matched)``), or None."""
        o = self.outcomes.get(outcome)
        return None if o is None else o.turner

    def label(self, outcome: str) -> str:
        """The outcome's label, or its name."""
        o = self.outcomes.get(outcome)
        return o.label if o is not None else outcome

    def better(self, outcome: str) -> str | None:
        """``"higher"``, ``"lower"`` or None when the description does not say."""
        o = self.outcomes.get(outcome)
        return None if o is None else o.better

    def benefit_sign(self, outcome: str, override: str | None = None) -> int:
        """+1 when more events are better, -1 when fewer are (also the default when nothing says)."""
        b = override or self.better(outcome)
        return 1 if b == "higher" else -1

    def comparison(self) -> str:
        """``"treatment vs control"`` in the described words."""
        return f"{self.treatment} vs {self.control}"

    def to_dict(self) -> dict:
        return {"title": self.title, "treatment": self.treatment, "control": self.control,
                "evidence_note": self.evidence_note, "path": self.path,
                "outcomes": {k: {"label": v.label, "better": v.better} for k, v in self.outcomes.items()}}


@dataclass(frozen=True)
class SourceDescription:
    """What published estimates are compared against: a label and the number of studies they pooled."""

    label: str = "published estimates"
    k: int | None = None
    citation: str | None = None
    path: str | None = None

    def short(self) -> str:
        """E.g. ``"abstract (k=30)"``: the label, and k when known."""
        return self.label + (f" (k={self.k})" if self.k is not None else "")


def sidecar(csv_path: str | Path) -> Path:
    """The description file that belongs to ``csv_path``: the same name with ``.toml``."""
    return Path(csv_path).with_suffix(".toml")


def load_description(csv_path: str | Path | None = None, path: str | Path | None = None) -> Description:
    """Read the description of a study table.

    Parameters
    ----------
    csv_path : str or Path, optional
        The study table; its sidecar ``.toml`` is read when it exists.
    path : str or Path, optional
        An explicit description file (must exist); takes precedence over the sidecar.

    Returns
    -------
    Description
        Neutral defaults when there is no description.
    """
    if path is None:
        if csv_path is None or not sidecar(csv_path).is_file():
            return Description()
        p = sidecar(csv_path)
    else:
        p = Path(path)
        if not p.is_file():
            raise InputError("description file not found", file=p)
    doc = read_toml(p, "description")
    check_keys(doc, {"dataset": dict, "outcomes": dict}, p, nonempty_strings=True)
    ds = doc.get("dataset", {})
    check_keys(ds, _DATASET_KEYS, p, "dataset.", nonempty_strings=True)
    outcomes = {}
    for name, o in doc.get("outcomes", {}).items():
        check_keys(o, _OUTCOME_KEYS, p, f"outcomes.{name}.", nonempty_strings=True)
        better = o.get("better")
        if better is not None and better not in BETTER:
            raise InputError(f"key 'outcomes.{name}.better' must be 'higher' or 'lower', got {better!r}", file=p)
        outcomes[name] = OutcomeDescription(name, o.get("label", name), better, o.get("turner"))
    for name, o in outcomes.items():
        if o.turner is not None:
            _check_turner(f"turner({o.turner}, nonpharma_vs_placebo)", f"outcomes.{name}.turner", p)
    if ds.get("turner_comparison"):
        _check_turner(f"turner(all_cause_mortality, {ds['turner_comparison']})", "dataset.turner_comparison", p)
    return Description(title=ds.get("title"), treatment=ds.get("treatment", "treatment"),
                       control=ds.get("control", "control"), evidence_note=ds.get("evidence_note"),
                       report_note=ds.get("report_note"), outcomes=outcomes, path=str(p),
                       turner_comparison=ds.get("turner_comparison"), randomised=ds.get("randomised"))


def _check_turner(spec: str, key: str, path: Path) -> None:
    from .priors import parse

    try:
        parse(spec, "tau")
    except InputError as e:
        raise InputError(f"key '{key}': {e.message}", file=path) from None


def load_source(csv_path: str | Path) -> SourceDescription:
    """The description of a file of published estimates (its sidecar ``.toml`` with a ``[source]`` table), or a
    neutral one."""
    p = sidecar(csv_path)
    if not p.is_file():
        return SourceDescription()
    doc = read_toml(p, "description")
    check_keys(doc, {"source": dict}, p, nonempty_strings=True)
    src = doc.get("source", {})
    check_keys(src, _SOURCE_KEYS, p, "source.", nonempty_strings=True)
    return SourceDescription(label=src.get("label", "published estimates"), k=src.get("k"),
                             citation=src.get("citation"), path=str(p))
