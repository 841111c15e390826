"""The disk-cached nutpie compilation (rescuemeta.compiled): the same draws as nutpie's own compiler, the user_data
layout it reads, reuse from disk by a new process, recovery from a corrupt cache entry, and the fallback."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import nutpie
import pytensor
import pytest

from rescuemeta import compiled
from rescuemeta.data import load_studies
from rescuemeta.fit import FitConfig, prepare
from rescuemeta.models import build_model, observed_data, padded_size, prior_data
from rescuemeta.priors import parse

from conftest import ROOT

DATA = ROOT / "data" / "studies.csv"


def _model(outcome="mortality", kind="contrast", measure="OR", size=None, shared=True):
    table = load_studies(DATA)
    cfg = FitConfig(outcome=outcome, model=kind, measure=measure)
    prep = prepare(table, cfg)
    p = cfg.priors()
    base = p["baseline"] if kind == "contrast" else None
    size = padded_size(prep.model_data.k) if size is None else size
    return build_model(prep.model_data, p["tau"], p["effect"], base, size=size,
                       shared_binomial=shared and kind != "normal"), prep, p


def _draws(c, seed=5):
    idata = nutpie.sample(c, draws=200, tune=200, chains=2, cores=2, seed=seed, progress_bar=False)
    return {v: idata.posterior[v].values for v in idata.posterior.data_vars}


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _nutpie_compile(model):
    # nutpie's own compiler under the flags ours uses (IEEE arithmetic, no fastmath: see compile_pymc_model)
    with pytensor.config.change_flags(numba__fastmath=False):
        return nutpie.compile_pymc_model(model, freeze_model=False)


@pytest.fixture(scope="module")
def normal_ours():
    """The normal model compiled by rescuemeta.compiled (from the disk cache the suite's precompile filled)."""
    model, prep, p = _model("mortality", "normal", shared=False)
    ours = compiled.compile_pymc_model(model)
    assert compiled.last_path == "fast"
    return ours, model, prep, p


@pytest.fixture(scope="module")
def normal_pair(normal_ours):
    """The normal model compiled both ways. nutpie's own wrapper is compiled anew in every process (40-65 s from
    an empty cache on these machines, a tenth of the CI suite), so the bit-for-bit comparisons run with the slow
    checks; under CI the wrapper is checked on every compile against the PyTensor function it wraps
    (``check_one_point``) and its reading of nutpie's record by the layout tests below."""
    ours, model, prep, p = normal_ours
    return ours, _nutpie_compile(model), prep, p


@pytest.mark.slow
def test_same_draws_as_nutpie_compile(normal_pair):
    """Bit-for-bit the draws of nutpie.compile_pymc_model(model, freeze_model=False) for the same seed."""
    ours, theirs, _, _ = normal_pair
    assert _same(_draws(ours), _draws(theirs))


@pytest.mark.slow
@pytest.mark.parametrize("outcome,kind,shared", [("mortality", "contrast", True), ("sich", "proportion", True)])
def test_same_draws_as_nutpie_compile_other_graphs(outcome, kind, shared):
    model, _, _ = _model(outcome, kind, shared=shared)
    ours = compiled.compile_pymc_model(model)
    assert compiled.last_path == "fast"
    assert _same(_draws(ours), _draws(_nutpie_compile(model)))


@pytest.mark.slow
def test_with_data_matches_nutpie(normal_pair):
    """Swapping prior values and observations (with_data) reads the new values through the user_data record."""
    ours, theirs, prep, p = normal_pair
    size = padded_size(prep.model_data.k)
    new = {**prior_data(parse("halfnormal(1.5)", "tau"), parse("normal(0.5, 2)", "effect"), None),
           **observed_data(prep.model_data, size)}
    new["y_obs"] = np.asarray(new["y_obs"]) + 0.4  # other observations of the same shape
    a, b = _draws(ours.with_data(**new)), _draws(theirs.with_data(**new))
    assert _same(a, b)
    assert not _same(a, _draws(ours))  # and the new values did change the posterior


def test_user_data_layout_matches_nutpie_record():
    """Our offsets into nutpie's user_data record equal the structured dtype's field offsets."""
    model, _, _ = _model("mortality", "normal", shared=False)
    c = compiled.compile_pymc_model(model)
    rec = c.user_data.dtype["shared"]
    names = list(c.shared_data)
    layout, words = compiled.user_data_layout(names, c.shared_data)
    assert c.user_data.dtype.itemsize == 8 * words
    for name, (i_ptr, i_size, i_shape, ndim, _) in layout.items():
        assert rec["data"].fields[name][1] == 8 * i_ptr
        assert rec.fields["size"][1] + rec["size"].fields[name][1] == 8 * i_size
        assert rec.fields["shape"][1] + rec["shape"].fields[name][1] == 8 * i_shape
        assert ndim == c.shared_data[name].ndim
    raw = c.user_data.view(np.uint64) if c.user_data.ndim else np.frombuffer(c.user_data.tobytes(), np.uint64)
    for name, (i_ptr, i_size, i_shape, ndim, _) in layout.items():
        arr = c.shared_data[name]
        assert raw[i_ptr] == arr.ctypes.data and raw[i_size] == arr.size
        assert tuple(raw[i_shape:i_shape + ndim]) == arr.shape


# a small model with shared data (what the wrapper reads through user_data): the mechanism is the one every model
# uses, and a cold compile of it takes seconds, not the half minute of the binomial graph
_CHILD = """
import json, sys
import numpy as np
import pymc as pm
from rescuemeta import compiled
with pm.Model() as m:
    y = pm.Data("y", np.array([0.1, -0.3, 0.4, 0.9]))
    s = pm.Data("s", np.array([0.5, 0.4, 0.6, 0.3]))
    mu = pm.Normal("mu", 0.0, 2.0)
    tau = pm.HalfNormal("tau", 0.5)
    z = pm.Normal("z", 0.0, 1.0, shape=4)
    pm.Normal("obs", mu + tau * z, s, observed=y)
c = compiled.compile_structure(("test-child", 4), lambda: m)
import nutpie
idata = nutpie.sample(c, draws=100, tune=100, chains=2, cores=2, seed=1, progress_bar=False)
print(json.dumps({"path": compiled.last_path, "graph": compiled.last_graph, "hits": [c.compiled_logp_func._cache_hits,
                  c.compiled_expand_func._cache_hits], "mu": float(idata.posterior["mu"].mean())}))
"""


def _child(compiledir):
    env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={compiledir}"}
    r = subprocess.run([sys.executable, "-c", _CHILD, str(DATA)], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_new_process_loads_from_disk_and_survives_corrupt_entries(tmp_path):
    """A fresh compile directory: the first process builds the model, compiles and saves both C callbacks (numba's
    cache) and the rewritten graphs (compile_structure); the second rebuilds the functions from the graphs (no
    model, no rewrites), loads both callbacks from disk and samples the same numbers. Corrupt entries (numba's and
    the graph file) are dropped and rebuilt."""
    first = _child(tmp_path)
    assert first["path"] == "fast" and first["graph"] == "built" and first["hits"] == [0, 0]
    graphs = list((tmp_path / "rescuemeta-graphs").glob("*.pkl"))
    assert len(graphs) == 1
    second = _child(tmp_path)
    assert second["graph"] == "disk" and second["hits"] == [1, 1]
    assert second["mu"] == first["mu"]
    entries = list((tmp_path / "numba").glob("string.logp_c-*.nbc"))
    assert entries
    for f in [*entries, *graphs]:
        f.write_bytes(b"not a cache entry")
    third = _child(tmp_path)
    assert third["graph"] == "built" and third["mu"] == first["mu"]
    # the corrupt entries were replaced (a later process loads them as the second did)
    assert all(f.read_bytes() != b"not a cache entry" for f in [*entries, *graphs] if f.exists())
    assert list((tmp_path / "numba").glob("string.logp_c-*.nbc")) and graphs[0].exists()


def test_falls_back_to_nutpie_when_internals_change(monkeypatch):
    """If nutpie's private helpers change (simulated: one is missing), nutpie's own compiler is used, with a
    warning, and sampling still works. (A one-parameter model: nutpie's own wrapper compiles in seconds.)"""
    import pymc as pm

    with pm.Model() as model:
        pm.Normal("mu", 0.0, 1.0)

    def missing(model):
        raise AttributeError("module 'nutpie.compile_pymc' has no attribute '_make_functions'")

    monkeypatch.setattr(compiled, "_compile_fast", missing)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        c = compiled.compile_pymc_model(model)
    assert compiled.last_path == "nutpie"
    assert any("cached nutpie compilation is unavailable" in str(x.message) for x in w)
    assert np.isfinite(_draws(c)["mu"]).all()


def test_layout_check_catches_a_moved_field(normal_ours):
    """The field-by-field check of nutpie's record: our layout passes; a layout one word off, or one that names
    a variable the record does not hold, is refused."""
    ours = normal_ours[0]
    layout, _ = compiled.user_data_layout(list(ours.shared_data), ours.shared_data)
    compiled.check_layout(ours.user_data, layout)
    name = next(iter(layout))
    i_ptr, i_size, i_shape, ndim, dtype = layout[name]
    with pytest.raises(compiled.FastPathUnavailable, match=f"shared.size.{name}"):
        compiled.check_layout(ours.user_data, {**layout, name: (i_ptr, i_size + 1, i_shape, ndim, dtype)})
    with pytest.raises(compiled.FastPathUnavailable, match="another structure"):
        compiled.check_layout(ours.user_data, {**layout, "not_there": layout[name]})


def test_one_point_check_compares_the_wrapper_with_nutpies_function(normal_ours):
    """The wrapper's log density at one point equals the PyTensor function's; a wrapper that reads other data
    than the function (here: the record pointed at new observations, the function left with the old) is
    caught."""
    ours = normal_ours[0]
    compiled.check_one_point(ours)
    shifted = ours.with_data(y_obs=ours.shared_data["y_obs"] + 1.0)
    with pytest.raises(compiled.FastPathUnavailable, match="log density"):
        compiled.check_one_point(shifted)


def test_untested_versions_and_the_opt_out_use_nutpies_compiler(monkeypatch):
    """The fast path runs only on the tested nutpie/PyTensor series and unless RESCUEMETA_FAST_COMPILE=0; the
    opt-out then compiles with nutpie's own compiler, silently (the fallback with a warning is tested above)."""
    import pymc as pm

    compiled._fast_path_allowed()  # the pinned versions are the tested ones
    monkeypatch.setitem(compiled.TESTED, "nutpie", "9.9.")
    with pytest.raises(compiled.FastPathUnavailable, match="not the tested 9.9.x series"):
        compiled._fast_path_allowed()
    monkeypatch.setitem(compiled.TESTED, "nutpie", nutpie.__version__)
    monkeypatch.setenv("RESCUEMETA_FAST_COMPILE", "0")
    with pytest.raises(compiled.FastPathUnavailable, match="RESCUEMETA_FAST_COMPILE"):
        compiled._fast_path_allowed()
    with pm.Model() as model:
        pm.Normal("mu", 0.0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the opt-out is silent
        c = compiled.compile_pymc_model(model)
    assert compiled.last_path == "nutpie" and np.isfinite(_draws(c)["mu"]).all()


def _initial_points(c, seeds=(0, 1, 7)):
    return [c.initial_point_func(s) for s in seeds]


def _cfunc_logp(c, x):
    import ctypes

    n = c.n_dim
    grad, logp = np.zeros(n), np.zeros(())
    dbl = ctypes.POINTER(ctypes.c_double)
    rc = c.compiled_logp_func.ctypes(n, x.ctypes.data_as(dbl), grad.ctypes.data_as(dbl), logp.ctypes.data_as(dbl),
                                     c.user_data.ctypes.data_as(ctypes.c_void_p))
    assert rc == 0
    return np.concatenate([[float(logp)], grad])


def test_graphs_from_disk_are_the_same_model(tmp_path, monkeypatch):
    """The padded normal graph (the suite's precompile put its numba code on disk; the mechanism is the same for
    every graph) built once and then rebuilt from its saved graphs: the same initial points for each seed (PyMC's
    jittered support points, whose random generators are updates of the rebuilt function), the same log density and
    gradient at several points, the same draws with the same seed, before and after swapping the data
    (with_data)."""
    monkeypatch.setattr(compiled, "graph_cache_dir", lambda: tmp_path)
    model, prep, p = _model("mortality", "normal", shared=False)
    built = compiled.compile_structure(("test-normal",), lambda: model)
    assert compiled.last_graph == "built" and len(list(tmp_path.glob("*.pkl"))) == 1
    loaded = compiled.compile_structure(("test-normal",), lambda: pytest.fail("built again"))
    assert compiled.last_graph == "disk"
    (names, slices, shapes), (names2, slices2, shapes2) = built.shape_info, loaded.shape_info
    assert names == names2 and slices == slices2 and [tuple(x) for x in shapes] == [tuple(x) for x in shapes2]
    assert built.n_expanded == loaded.n_expanded
    assert built.dims == loaded.dims and built.coords.keys() == loaded.coords.keys()
    for a, b in zip(_initial_points(built), _initial_points(loaded), strict=True):
        assert np.array_equal(a, b)
    rng = np.random.default_rng(3)
    for x in rng.normal(0.0, 0.7, size=(4, built.n_dim)):
        assert np.array_equal(_cfunc_logp(built, x), _cfunc_logp(loaded, x))
    assert _same(_draws(built), _draws(loaded))
    sd = built.shared_data
    new = {"y_obs": np.asarray(sd["y_obs"]) + 0.3}  # other observations of the same shape
    a, b = _draws(built.with_data(**new)), _draws(loaded.with_data(**new))
    assert _same(a, b) and not _same(a, _draws(built))


def test_graph_cache_keys_and_opt_out(tmp_path, monkeypatch):
    """Another structure is another file; RESCUEMETA_GRAPH_CACHE=0 builds every time and saves nothing."""
    import pymc as pm

    monkeypatch.setattr(compiled, "graph_cache_dir", lambda: tmp_path)

    def small():  # one graph under every key: numba compiles it once, the test is about the graph files
        with pm.Model() as m:
            pm.Normal("mu", 0.0, 1.0)
        return m

    assert compiled._graph_key(("a", 1)) != compiled._graph_key(("a", 2))
    compiled.compile_structure(("a", 1), small)
    compiled.compile_structure(("a", 2), small)
    assert compiled.last_graph == "built" and len(list(tmp_path.glob("*.pkl"))) == 2
    compiled.compile_structure(("a", 1), small)
    assert compiled.last_graph == "disk"
    monkeypatch.setenv("RESCUEMETA_GRAPH_CACHE", "0")
    compiled.compile_structure(("a", 1), small)
    assert compiled.last_graph == "built"
    compiled.compile_structure(("a", 3), small)
    assert len(list(tmp_path.glob("*.pkl"))) == 2
