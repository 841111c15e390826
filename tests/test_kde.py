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


def _signatures(fn) -> int:
    return len(fn.numba_fn.signatures) if "numba_fn" in fn.__dict__ else 0


def test_diagnostics_and_mcse_on_arvizs_numpy_path_equal_its_numba_path():
    """sampling.diagnose (R-hat, bulk and tail ESS) and the probability's MCSE run on ArviZ's NumPy path
    (summaries.arviz_numpy: ArviZ compiled its variance for 0.15-0.4 s on a process's first fit): nothing compiled,
    ArviZ's flag restored, the same numbers as ArviZ's numba path."""
    import pytest
    from arviz.stats.stats_utils import stats_variance_1d

    from rescuemeta.sampling import diagnose
    from rescuemeta.summaries import arviz_numpy

    rng = np.random.default_rng(7)
    ar = np.cumsum(rng.normal(size=(4, 1000, 5)), axis=1) * 0.05 + rng.normal(size=(4, 1000, 5))  # autocorrelated
    idata = az.from_dict(posterior={"mu": ar[..., 0], "tau": np.exp(ar[..., 1]), "theta": ar[..., 2:]},
                         sample_stats={"diverging": np.zeros((4, 1000), dtype=bool)})
    before = _signatures(stats_variance_1d)
    d = diagnose(idata)
    assert az.Numba.numba_flag and _signatures(stats_variance_1d) == before
    names = ["mu", "tau", "theta"]
    rhat = max(float(np.max(az.rhat(idata, var_names=[v])[v].values)) for v in names)  # ArviZ's numba path
    bulk = min(float(np.min(az.ess(idata, var_names=[v], method="bulk")[v].values)) for v in names)
    tail = min(float(np.min(az.ess(idata, var_names=[v], method="tail")[v].values)) for v in names)
    assert _signatures(stats_variance_1d) >= 1  # (that path is numba's)
    assert d.rhat_max == pytest.approx(rhat, rel=1e-10)
    assert d.ess_bulk_min == pytest.approx(bulk, rel=1e-10) and d.ess_tail_min == pytest.approx(tail, rel=1e-10)
    ind = (ar[..., 0] < 0).astype(float)
    with arviz_numpy():
        assert not az.Numba.numba_flag
        mc = float(np.asarray(az.mcse(ind, method="mean")).ravel()[0])
    assert az.Numba.numba_flag and mc == pytest.approx(float(np.asarray(az.mcse(ind, method="mean")).ravel()[0]), rel=1e-10)


def test_arviz_imported_without_its_eager_numba_compile():
    """rescuemeta._arviz.load (issue 19): in a new process, importing the package's sampling stage imports ArviZ
    without compiling ArviZ's ECDF-band ufunc (0.3-0.4 s per process); that ufunc still works, compiled on its
    first call, and equals the binomial pmf; numba's vectorize is restored."""
    import json
    import subprocess
    import sys

    code = """
import json, numba
eager = numba.vectorize
import rescuemeta.sampling
import arviz.stats.ecdf_utils as e
import numpy as np
before = len(e._binom_pmf.types)
k = np.arange(0, 11)
got = e._binom_pmf(k, 10, 0.3, 0)
print(json.dumps({"before": before, "after": len(e._binom_pmf.types), "pmf": got.tolist(),
                  "restored": numba.vectorize is eager}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
                     .stdout.strip().splitlines()[-1])
    from scipy import stats

    assert out["before"] == 0 and out["after"] >= 1 and out["restored"]
    np.testing.assert_allclose(out["pmf"], stats.binom.pmf(np.arange(0, 11), 10, 0.3), rtol=1e-12)
