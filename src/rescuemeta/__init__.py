"""rescuemeta: meta-analysis of binary outcomes (frequentist checks first, Bayesian models next).

Pipeline stages, one module each: :mod:`rescuemeta.data` (loading, schema, inclusion rules),
:mod:`rescuemeta.effects` (study-level effect sizes), :mod:`rescuemeta.freq` (frequentist pooling,
parity with R metafor), :mod:`rescuemeta.check` (the published abstract against our reproduction),
and :mod:`rescuemeta.cli` on top.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("rescuemeta")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = ["__version__"]
