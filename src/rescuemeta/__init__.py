"""rescuemeta: Bayesian and frequentist meta-analysis of binary outcomes.

Pipeline stages, one module each: :mod:`~rescuemeta.data` (loading, schema, inclusion rules),
:mod:`~rescuemeta.effects` (study effect sizes), :mod:`~rescuemeta.freq` (frequentist pooling, metafor parity),
:mod:`~rescuemeta.check` (the abstract against our reproduction), :mod:`~rescuemeta.priors`,
:mod:`~rescuemeta.models`, :mod:`~rescuemeta.sampling`, :mod:`~rescuemeta.fit` (posteriors and summaries, with
:mod:`~rescuemeta.exact` for the normal-normal model), :mod:`~rescuemeta.queries` and
:mod:`~rescuemeta.reanalyze` (probability statements), :mod:`~rescuemeta.sensitivity`,
:mod:`~rescuemeta.report`, and :mod:`~rescuemeta.cli` on top.

The public API below is imported on first use, so that ``import rescuemeta`` (and the CLI's ``--help``,
``check`` and ``freq``) never load PyMC, ArviZ, numba or matplotlib.
"""

from importlib import import_module

from ._version import __version__

_API = {
    "load_studies": "data", "select": "data",
    "escalc": "effects", "meta_analyze": "freq",
    "load_abstract": "check", "check": "check",
    "parse_prior": ("priors", "parse"),
    "FitConfig": "fit", "fit": "fit", "FitResult": "fit",
    "NormalNormalPosterior": "exact",
    "probability": "queries", "reanalyze": "reanalyze", "PublishedEstimate": "reanalyze",
    "load_sensitivity": "sensitivity", "run_grid": "sensitivity",
    "analyze": "report",
}

__all__ = ["__version__", *_API]

# ``fit``, ``check`` and ``reanalyze`` name both a module and its main function. Importing a submodule sets the
# package attribute to the module, so each of these modules makes itself callable (``_callable_module``):
# ``rescuemeta.fit(table, cfg)`` calls the function whichever of the two the attribute holds.


def _callable_module(module_name: str, function_name: str) -> None:
    """Let the module ``module_name`` be called as its function ``function_name``."""
    import sys
    import types

    module = sys.modules[module_name]

    class _Module(types.ModuleType):
        def __call__(self, *args, **kwargs):
            return getattr(self, function_name)(*args, **kwargs)

    module.__class__ = _Module


def __getattr__(name):
    if name in _API:
        target = _API[name]
        mod, attr = target if isinstance(target, tuple) else (target, name)
        return getattr(import_module(f".{mod}", __name__), attr)
    raise AttributeError(f"module 'rescuemeta' has no attribute {name!r}")
