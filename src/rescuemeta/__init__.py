"""rescuemeta: Bayesian and frequentist meta-analysis of binary outcomes.

Pipeline stages, one module each: :mod:`~rescuemeta.data` (loading, schema, inclusion rules),
:mod:`~rescuemeta.effects` (study effect sizes), :mod:`~rescuemeta.freq` (frequentist pooling, metafor parity),
:mod:`~rescuemeta.check` (the abstract against our reproduction), :mod:`~rescuemeta.priors`,
:mod:`~rescuemeta.models`, :mod:`~rescuemeta.sampling`, :mod:`~rescuemeta.fit` (posteriors and summaries, with
:mod:`~rescuemeta.exact` for the normal-normal model), :mod:`~rescuemeta.queries` and
:mod:`~rescuemeta.reanalyze` (probability statements), :mod:`~rescuemeta.sensitivity`,
:mod:`~rescuemeta.report`, and :mod:`~rescuemeta.cli` on top.

The public API below is imported on first use, except ``fit``, ``check`` and ``reanalyze``.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rescuemeta")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

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


# names shared by a module and its main function: bound eagerly, because importing the submodule would
# otherwise set the package attribute to the module
from .check import check  # noqa: E402,F401
from .fit import fit  # noqa: E402,F401
from .reanalyze import reanalyze  # noqa: E402,F401


def __getattr__(name):
    if name in _API:
        target = _API[name]
        mod, attr = target if isinstance(target, tuple) else (target, name)
        return getattr(import_module(f".{mod}", __name__), attr)
    raise AttributeError(f"module 'rescuemeta' has no attribute {name!r}")
