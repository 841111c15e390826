"""summaries.kde: ArviZ's KDE without its numba path (a first call compiled ArviZ's histogram for 7.8 s in a new
environment): the same grid and density as ArviZ's numba path, ArviZ's flag restored, nothing compiled."""

import arviz as az
import numpy as np

from rescuemeta.summaries import kde


def test_same_density_as_arvizs_numba_path_and_flag_restored():
    from arviz.stats.density_utils import histogram

    x = np.abs(np.random.default_rng(4).standard_t(3, 4000)) * 0.3
    before = len(histogram.numba_fn.signatures) if "numba_fn" in histogram.__dict__ else 0
    for bound in (True, False):
        kx, ky = kde(x, bound_correction=bound)
        assert az.Numba.numba_flag  # restored
        after = len(histogram.numba_fn.signatures) if "numba_fn" in histogram.__dict__ else 0
        assert after == before  # no numba compilation on this path
        rx, ry = az.kde(x, bound_correction=bound)  # ArviZ's default (numba) path
        np.testing.assert_allclose(kx, rx, rtol=1e-12)
        np.testing.assert_allclose(ky, ry, rtol=1e-9, atol=1e-12)
        before = len(histogram.numba_fn.signatures)
