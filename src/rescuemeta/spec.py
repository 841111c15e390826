"""Declarative analysis specs (TOML files in ``models/``): what users edit instead of code.

Every key is checked: an unknown key, a wrong type or a malformed prior is an :class:`InputError` naming
the file and the key (exit code 2). ``tomllib`` (standard library) parses the file.

``models/primary.toml`` (the main analysis), top-level keys, all optional:

===================  ===============================================================================
``outcomes``         list of outcome names, or ``["*"]`` for every outcome in the data (default)
``models``           list of ``contrast``/``proportion``/``normal`` (default ``["contrast", "proportion"]``;
                     ``contrast`` is skipped for outcomes without control arms)
``measure``          ``OR`` or ``RR`` for the normal model (default ``OR``)
``tau_prior``        prior spec on tau (default ``halfnormal(0.5)``)
``effect_prior``     prior on mu (default ``normal(0, 4)``)
``baseline_prior``   prior on the study baselines alpha_i (default ``normal(0, 10)``)
``draws``, ``tune``, ``chains``, ``seed``   sampler settings (1000, 1000, 4, 1)
``all_studies``      keep every row of overlap groups (default false)
``exclude_basis``    list of count_basis values to drop (default none)
``queries``          probability queries, e.g. ``["RR < 1", "RR < 0.8"]``
``thresholds``       ratio thresholds for P(ratio < t) tables (default [1, 0.9, 0.8])
``sensitivity_tau_priors``  the small sensitivity grid of the report (default halfnormal 0.25/0.5/1,
                     halfcauchy(0.5), turner(matched))
``[outcome.NAME]``   per-outcome overrides of the prior keys (e.g. a Turner prior matching the outcome)
===================  ===============================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from .data import parse_exclude_basis
from .defaults import THRESHOLDS as DEFAULT_THRESHOLDS
from .errors import InputError
from .priors import DEFAULT_BASELINE_PRIOR, DEFAULT_EFFECT_PRIOR, DEFAULT_TAU_PRIOR, parse
from .tomlio import check_keys, read_toml

__all__ = ["DEFAULT_PRIMARY", "DEFAULT_QUERIES", "DEFAULT_SENSITIVITY_TAU", "SAMPLER_MINIMA", "check_sampler_settings",
           "check_ratio_settings", "check_prior", "PrimarySpec", "load_primary"]

DEFAULT_PRIMARY = Path("models/primary.toml")
DEFAULT_QUERIES = ("RR < 1", "RR < 0.8", "RD < -0.05")
DEFAULT_SENSITIVITY_TAU = ("halfnormal(0.25)", "halfnormal(0.5)", "halfnormal(1)", "halfcauchy(0.5)", "turner(matched)")

_PRIOR_KEYS = {"tau_prior": str, "effect_prior": str, "baseline_prior": str}
_PRIMARY_KEYS = {"outcomes": list, "models": list, "measure": str, **_PRIOR_KEYS, "draws": int, "tune": int,
                 "chains": int, "seed": int, "all_studies": bool, "exclude_basis": list, "queries": list,
                 "thresholds": list, "outcome": dict, "sensitivity_tau_priors": list}


SAMPLER_MINIMA = {"draws": 10, "tune": 0, "chains": 1, "seed": 0}


def check_sampler_settings(settings, path=None, *, as_options: bool = False) -> None:
    """The sampler settings every spec and every fit carries (``draws``, ``tune``, ``chains``, ``seed``): integers
    with their minima (:data:`SAMPLER_MINIMA`). Errors name the spec's key, or the option (``as_options``)."""
    for key, lo in SAMPLER_MINIMA.items():
        v = getattr(settings, key)
        if isinstance(v, bool) or int(v) != v or v < lo:
            name = f"--{key}" if as_options else f"key {key!r}"
            raise InputError(f"{name} must be an integer >= {lo}, got {v!r}", file=path)


def check_ratio_settings(spec, path) -> None:
    """``measure`` (OR or RR) and ``thresholds`` (positive ratios), as the primary and sensitivity specs take them."""
    if spec.measure not in ("OR", "RR"):
        raise InputError(f"key 'measure' must be OR or RR, got {spec.measure!r}", file=path)
    if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in spec.thresholds):
        raise InputError("key 'thresholds' must be a list of positive ratios", file=path)
    spec.thresholds = [float(t) for t in spec.thresholds]


def check_prior(value: str, kind: str, key: str, path) -> str:
    """A prior spec as a spec file gives it (``kind``: "tau" or "effect"): returned unchanged when it parses, else
    an InputError naming the file and the key."""
    try:
        parse(value, kind)
    except InputError as e:
        raise InputError(f"key {key!r}: {e.message}", file=path) from None
    return value


@dataclass
class PrimarySpec:
    """The main analysis (``models/primary.toml``)."""

    path: str
    outcomes: list[str] = field(default_factory=lambda: ["*"])
    models: list[str] = field(default_factory=lambda: ["contrast", "proportion"])
    measure: str = "OR"
    tau_prior: str = DEFAULT_TAU_PRIOR
    effect_prior: str = DEFAULT_EFFECT_PRIOR
    baseline_prior: str = DEFAULT_BASELINE_PRIOR
    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    seed: int = 1
    all_studies: bool = False
    exclude_basis: list[str] = field(default_factory=list)
    queries: list[str] = field(default_factory=lambda: list(DEFAULT_QUERIES))
    thresholds: list[float] = field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    outcome: dict = field(default_factory=dict)
    sensitivity_tau_priors: list[str] = field(default_factory=lambda: list(DEFAULT_SENSITIVITY_TAU))

    def resolve_outcomes(self, available: list[str]) -> list[str]:
        if self.outcomes == ["*"]:
            return list(available)
        missing = [o for o in self.outcomes if o not in available]
        if missing:
            raise InputError(f"key 'outcomes': {', '.join(map(repr, missing))} not in the data; available: "
                             f"{', '.join(available)}", file=self.path)
        return list(self.outcomes)

    def configs(self, available: list[str], *, draws: int | None = None, seed: int | None = None,
                backend: str = "nutpie") -> list:
        """One :class:`FitConfig` per outcome x model (contrast configs for outcomes without control arms
        are still listed; the caller reports them as not estimable)."""
        from .fit import FitConfig

        out = []
        for oc in self.resolve_outcomes(available):
            over = self.outcome.get(oc, {})
            for m in self.models:
                cfg = FitConfig(outcome=oc, model=m, measure=self.measure, tau_prior=over.get("tau_prior", self.tau_prior),
                                effect_prior=over.get("effect_prior", self.effect_prior),
                                baseline_prior=over.get("baseline_prior", self.baseline_prior),
                                all_studies=self.all_studies, exclude_basis=tuple(self.exclude_basis),
                                draws=self.draws, tune=self.tune, chains=self.chains, seed=self.seed, backend=backend)
                if draws is not None:
                    cfg = replace(cfg, draws=draws)
                if seed is not None:
                    cfg = replace(cfg, seed=seed)
                out.append(cfg)
        return out


def load_primary(path: str | Path | None = DEFAULT_PRIMARY) -> PrimarySpec:
    """Read and validate a primary-analysis spec such as ``models/primary.toml``.

    Parameters
    ----------
    path : str or Path or None
        None: no file, every key at its default (an analysis of any data set with the package's defaults).

    Returns
    -------
    PrimarySpec
        Missing keys take their defaults; an unknown key or bad value raises :class:`InputError`.
    """
    if path is None:
        return PrimarySpec(path="(built-in defaults)")
    doc = read_toml(path)
    check_keys(doc, _PRIMARY_KEYS, path)
    spec = PrimarySpec(path=str(path))
    for key, value in doc.items():
        if key == "outcome":
            for oc, over in value.items():
                if not isinstance(over, dict):
                    raise InputError(f"[outcome.{oc}] must be a table of prior keys", file=path)
                check_keys(over, _PRIOR_KEYS, path, prefix=f"outcome.{oc}.")
                for pk, pv in over.items():
                    check_prior(pv, "tau" if pk == "tau_prior" else "effect", f"outcome.{oc}.{pk}", path)
            spec.outcome = value
            continue
        setattr(spec, key, value)
    for key in _PRIOR_KEYS:
        check_prior(getattr(spec, key), "tau" if key == "tau_prior" else "effect", key, path)
    for i, tp in enumerate(spec.sensitivity_tau_priors):
        if not isinstance(tp, str):
            raise InputError("key 'sensitivity_tau_priors' must be a list of prior specs", file=path)
        if not tp.replace(" ", "").lower().startswith("turner(matched"):
            check_prior(tp, "tau", f"sensitivity_tau_priors[{i}]", path)
    for q in spec.queries if isinstance(spec.queries, list) else []:
        from .queries import parse_query

        try:
            parse_query(q)
        except InputError as e:
            raise InputError(f"key 'queries': {e.message}", file=path) from None
    for key in ("outcomes", "models", "exclude_basis", "queries"):
        v = getattr(spec, key)
        if not all(isinstance(x, str) for x in v):
            raise InputError(f"key {key!r} must be a list of strings", file=path)
    if not spec.outcomes:
        raise InputError("key 'outcomes' is empty", file=path)
    try:
        parse_exclude_basis(",".join(spec.exclude_basis))
    except InputError as e:
        raise InputError(f"key 'exclude_basis': {e.message.split(': ', 1)[1]}", file=path) from None
    from .kinds import MODEL_KINDS

    bad = [m for m in spec.models if m not in MODEL_KINDS]
    if bad or not spec.models:
        raise InputError(f"key 'models': {bad or 'empty'}; choose from {', '.join(MODEL_KINDS)}", file=path)
    check_ratio_settings(spec, path)
    check_sampler_settings(spec, path)
    return spec
