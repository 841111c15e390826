"""Importing ArviZ without compiling what the package never calls (issue 19).

ArviZ 0.23 compiles one numba ufunc eagerly when it is imported (``arviz.stats.ecdf_utils._binom_pmf``, declared
with explicit signatures: ``@vectorize(["float64(int64, int64, float64, int64)"])``), with no disk cache: 0.3-0.4 s
in every new process that imports ArviZ (measured: ``import arviz`` 1.63-1.71 s against 1.35-1.39 s without that
compilation, three interleaved pairs). It serves ArviZ's ECDF confidence bands, which rescuemeta does not draw.
:func:`load` imports ArviZ with numba's ``vectorize`` made lazy for the duration of the import (the signatures
dropped, so the ufunc compiles on its first call, for the types it is called with, as numba's lazy ``vectorize``
does); numba's ``vectorize`` is restored afterwards. If ArviZ is already imported (by the user, by another
package), nothing changes.
"""

from __future__ import annotations

import sys


def load():
    """``import arviz`` (see the module's docstring); returns the module."""
    if "arviz" in sys.modules:
        return sys.modules["arviz"]
    import numba

    eager = numba.vectorize

    def lazy(*args, **kwargs):
        if args and isinstance(args[0], (list, tuple)):  # explicit signatures: compile on first call instead
            args = args[1:]
        return eager(*args, **kwargs)

    numba.vectorize = lazy
    try:
        import arviz
    finally:
        numba.vectorize = eager
    return arviz
