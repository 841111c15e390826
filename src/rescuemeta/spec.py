"""Declarative analysis specs (TOML files in ``models/``): what users edit instead of code.

Every key is checked: an unknown key, a wrong type or a malformed prior is an :class:`InputError` naming
the file and the key (exit code 2). ``tomllib`` (standard library) parses the file.

``models/primary.toml`` (the main analysis), top-level keys, all optional:

===================  ===============================================================================
``outcomes``         list of outcome names, or ``["*"]`` for every outcome in the data (default)
``models``           list of ``contrast``/``proportion``/``normal`` (default ``["contrast", "proportion"]``;
                     ``contrast`` is skipped for outcomes without control arms)
``measure``          ``OR`` or ``RR`` for the normal model (default ``OR``)
``tau_prior``        prior spec on tau, for every model, or a table per model kind (``[tau_prior]
                     contrast = "..."``); default per kind (:attr:`rescuemeta.kinds.ModelKind.default_tau_prior`:
                     ``halfnormal(0.5)`` on log ratios, ``halfnormal(1)`` on logit event rates)
``effect_prior``     prior on mu (default ``normal(0, 4)``)
``baseline_prior``   prior on the study baselines alpha_i (default ``normal(0, 10)``)
``subgroups``       study-table columns to analyse by level (e.g. ``["circulation"]``), every outcome and ratio
                     model where two levels hold two or more studies (a meta-regression on the column)
``moderators``       numeric study-table columns for a meta-regression each (e.g. ``["year"]``)
``control_risk``     what RR and RD are conditional on: ``median`` (default), a risk in (0, 1), ``mean-draws`` or
                     ``marginal`` (the last two for the contrast model; see :class:`rescuemeta.fit.FitConfig`)
``draws``, ``tune``, ``chains``, ``seed``   sampler settings (1000, 1000, 4, 1)
``all_studies``      keep every row of overlap groups (default false)
``exclude_basis``    list of count_basis values to drop (default none)
``queries``          probability queries, e.g. ``["RR < 1", "RR < 0.8"]``
``thresholds``       ratio thresholds for P(ratio < t) tables (default [1, 0.9, 0.8])
``sensitivity_tau_priors``  the small sensitivity grid of the report (over ``outcomes`` and ``models``): a list
                     for every model, or a table of lists per model kind (default per kind:
                     ``sensitivity_tau_priors`` in :mod:`rescuemeta.kinds`)
``[outcome.NAME]``   per-outcome overrides of the prior keys (e.g. a Turner prior matching the outcome;
                     ``tau_prior`` may again be a table per model kind)

Turner et al. (2015) priors describe log odds ratios: they are refused for the proportion model (whose tau is
the SD of logit event rates), with a message saying so, wherever they would reach it.
===================  ===============================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from .data import parse_exclude_basis
from .defaults import THRESHOLDS as DEFAULT_THRESHOLDS
from .errors import InputError
from .priors import DEFAULT_BASELINE_PRIOR, DEFAULT_EFFECT_PRIOR, parse
from .tomlio import check_keys, read_toml

__all__ = ["DEFAULT_PRIMARY", "DEFAULT_QUERIES", "SAMPLER_MINIMA", "check_sampler_settings", "check_ratio_settings",
           "check_prior", "tau_priors_for", "check_tau_priors", "describe_tau_priors", "PrimarySpec", "load_primary"]

DEFAULT_PRIMARY = Path("models/primary.toml")
DEFAULT_QUERIES = ("RR < 1", "RR < 0.8", "RD < -0.05")

_PRIOR_KEYS = {"tau_prior": (str, dict), "effect_prior": str, "baseline_prior": str}
_PRIMARY_KEYS = {"outcomes": list, "models": list, "measure": str, **_PRIOR_KEYS, "draws": int, "tune": int,
                 "chains": int, "seed": int, "all_studies": bool, "exclude_basis": list, "queries": list,
                 "thresholds": list, "outcome": dict, "sensitivity_tau_priors": (list, dict), "control_risk": str,
                 "subgroups": list, "moderators": list, "bias_priors": list, "tipping_threshold": float,
                 "tipping_bias_sd": float, "figure_formats": list}


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


def tau_priors_for(value, kind: str, *, many: bool = False):
    """The tau prior (``many``: the list of tau priors) a spec key gives model ``kind``: the key's value when it is
    given once for every kind, its entry when it is a table per kind, else the kind's default
    (:attr:`rescuemeta.kinds.ModelKind.default_tau_prior` / ``sensitivity_tau_priors``)."""
    from .kinds import get

    v = value.get(kind) if isinstance(value, dict) else value
    if v is None:
        mk = get(kind)
        return list(mk.sensitivity_tau_priors) if many else mk.default_tau_prior
    return v


def check_tau_priors(value, models, key: str, path, *, many: bool = False) -> None:
    """Validate a tau-prior key for every model kind it reaches: each spec parses (``turner(matched)`` is checked
    for its comparison type), and applies to the kind (no Turner prior for the proportion model). Errors name the
    file and the key (``key.kind[i]``)."""
    from .description import Description, OutcomeDescription
    from .kinds import MODEL_KINDS
    from .priors import is_matched, resolve_matched

    if isinstance(value, dict):
        bad = [k for k in value if k not in MODEL_KINDS]
        if bad:
            raise InputError(f"key {key!r}: {bad[0]!r} is not a model kind; a table per model takes "
                             f"{', '.join(MODEL_KINDS)}", file=path)
    probe = Description(outcomes={"x": OutcomeDescription("x", "x", None, "all_cause_mortality")})
    for m in models:
        if m not in MODEL_KINDS:
            continue  # the models key reports it
        v = tau_priors_for(value, m, many=many)
        sub = f"{key}.{m}" if isinstance(value, dict) else key
        if many and (not isinstance(v, list) or not v):
            raise InputError(f"key {sub!r} must be a non-empty list of prior specs", file=path)
        for i, tp in enumerate(v if many else [v]):
            name = f"{sub}[{i}]" if many else sub
            if not isinstance(tp, str):
                raise InputError(f"key {name!r} must be a prior spec (a string), got {tp!r}", file=path)
            try:
                MODEL_KINDS[m].check_tau_prior(tp)
            except InputError as e:
                hint = ("" if isinstance(value, dict) else f". Give each model its own: [{key}] contrast = ..., "
                        f"{m} = ...")
                raise InputError(f"key {name!r}: {e.message}{hint}", file=path) from None
            check_prior(resolve_matched(tp, "x", probe) if is_matched(tp) else tp, "tau", name, path)


def describe_tau_priors(value, models, *, many: bool = False) -> str:
    """The tau prior(s) of each model kind in words, e.g. ``halfnormal(0.5) (contrast); halfnormal(1) (proportion)``."""
    parts: dict[str, list[str]] = {}
    for m in models:
        v = tau_priors_for(value, m, many=many)
        parts.setdefault(", ".join(v) if many else v, []).append(m)
    if len(parts) == 1:
        return next(iter(parts))
    return "; ".join(f"{v} ({', '.join(ms)})" for v, ms in parts.items())


@dataclass
class PrimarySpec:
    """The main analysis (``models/primary.toml``)."""

    path: str
    outcomes: list[str] = field(default_factory=lambda: ["*"])
    models: list[str] = field(default_factory=lambda: ["contrast", "proportion"])
    measure: str = "OR"
    tau_prior: str | dict | None = None  # None: each model kind's default
    effect_prior: str = DEFAULT_EFFECT_PRIOR
    baseline_prior: str = DEFAULT_BASELINE_PRIOR
    control_risk: str = "median"
    subgroups: list[str] = field(default_factory=list)
    moderators: list[str] = field(default_factory=list)
    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    seed: int = 1
    all_studies: bool = False
    exclude_basis: list[str] = field(default_factory=list)
    queries: list[str] = field(default_factory=lambda: list(DEFAULT_QUERIES))
    thresholds: list[float] = field(default_factory=lambda: list(DEFAULT_THRESHOLDS))
    outcome: dict = field(default_factory=dict)
    sensitivity_tau_priors: list[str] | dict | None = None  # None: each model kind's default grid
    # non-randomised evidence (rescuemeta.bias): bias priors shown in the report (names in models/bias_priors.toml
    # or normal(m, s)), and the tipping point's threshold and bias SD
    bias_priors: list[str] = field(default_factory=list)
    tipping_threshold: float = 0.95
    tipping_bias_sd: float = 0.1
    # figure files besides the PNG the report embeds ("svg", "pdf"): each costs a full render of every figure
    figure_formats: list[str] = field(default_factory=lambda: ["png"])

    def tau_prior_for(self, kind: str, outcome: str | None = None) -> str:
        """The tau prior of ``kind`` (and ``outcome``'s override, where it has one)."""
        over = self.outcome.get(outcome, {}).get("tau_prior") if outcome is not None else None
        if over is not None and (not isinstance(over, dict) or kind in over):
            return tau_priors_for(over, kind)
        return tau_priors_for(self.tau_prior, kind)

    def sensitivity_tau_priors_for(self, kind: str) -> list[str]:
        return list(tau_priors_for(self.sensitivity_tau_priors, kind, many=True))

    def control_risk_for(self, kind: str) -> str:
        """``control_risk`` where the model kind takes it (ratio models; mean-draws and marginal need modelled
        baselines), else ``median``."""
        from .kinds import get

        mk = get(kind)
        if mk.estimand != "ratio" or (self.control_risk in ("mean-draws", "marginal") and mk.control_risk != "draws"):
            return "median"
        return self.control_risk

    def describe_tau_prior(self) -> str:
        return describe_tau_priors(self.tau_prior, self.models)

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
                cfg = FitConfig(outcome=oc, model=m, measure=self.measure, tau_prior=self.tau_prior_for(m, oc),
                                control_risk=self.control_risk_for(m),
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
                    if pk != "tau_prior":
                        check_prior(pv, "effect", f"outcome.{oc}.{pk}", path)
            spec.outcome = value
            continue
        setattr(spec, key, value)
    models = [m for m in spec.models if isinstance(m, str)] if isinstance(spec.models, list) else []
    for oc, over in spec.outcome.items():
        if "tau_prior" in over:
            ms = [m for m in models if not isinstance(over["tau_prior"], dict) or m in over["tau_prior"]]
            check_tau_priors(over["tau_prior"], ms, f"outcome.{oc}.tau_prior", path)
    check_tau_priors(spec.tau_prior, models, "tau_prior", path)
    for key in ("effect_prior", "baseline_prior"):
        check_prior(getattr(spec, key), "effect", key, path)
    check_tau_priors(spec.sensitivity_tau_priors, models, "sensitivity_tau_priors", path, many=True)
    for q in spec.queries if isinstance(spec.queries, list) else []:
        from .queries import parse_query

        try:
            parse_query(q)
        except InputError as e:
            raise InputError(f"key 'queries': {e.message}", file=path) from None
    if spec.bias_priors:
        from .bias import find_bias_priors, load_bias_priors
        from .priors import parse_bias_prior

        named = load_bias_priors(find_bias_priors(path))
        for b in spec.bias_priors:
            if not isinstance(b, str):
                continue  # the list-of-strings check below names it
            if b in named:
                continue
            try:
                parse_bias_prior(b)
            except InputError:
                raise InputError(f"key 'bias_priors': {b!r} is neither normal(m, s) nor a named bias prior"
                                 + (f" ({', '.join(named)})" if named else " (no bias_priors.toml found)"),
                                 file=path) from None
    if not 0 < spec.tipping_threshold < 1:
        raise InputError(f"key 'tipping_threshold' must be strictly between 0 and 1, got {spec.tipping_threshold}",
                         file=path)
    if not spec.tipping_bias_sd >= 0:
        raise InputError(f"key 'tipping_bias_sd' must be >= 0, got {spec.tipping_bias_sd}", file=path)
    from .figures import FIGURE_FORMATS

    bad = [f for f in spec.figure_formats if f not in FIGURE_FORMATS]
    if bad:
        raise InputError(f"key 'figure_formats': {bad} not among {', '.join(FIGURE_FORMATS)}", file=path)
    for key in ("outcomes", "models", "exclude_basis", "queries", "subgroups", "moderators", "bias_priors",
                "figure_formats"):
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
    from .defaults import CONTROL_RISKS

    if spec.control_risk not in CONTROL_RISKS:
        try:
            ok = 0 < float(spec.control_risk) < 1
        except ValueError:
            ok = False
        if not ok:
            raise InputError(f"key 'control_risk' must be {', '.join(CONTROL_RISKS)} or a risk strictly between 0 "
                             f"and 1, got {spec.control_risk!r}", file=path)
    return spec
