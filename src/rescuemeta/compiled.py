"""The compile step of the sampling stage: a PyMC model turned into the C callbacks nutpie samples, cached on
disk so that a new process does not pay numba's compilation again. (The shared binomial graph, which most fits use,
does not come here: its log density is hand-written, :mod:`rescuemeta.native`; the normal model, hierarchical
baselines and the bias model do.)

Why this exists. ``nutpie.compile_pymc_model`` (0.16.8) builds the log-density-and-gradient function with
PyTensor's numba backend — which PyTensor caches on disk — and then wraps it in a ``numba.cfunc`` that numba
compiles anew in every process (its wrapper refers to per-process objects, so ``cache=True`` is silently
refused). Measured on the rescue models: 8-9 s of every process's ~10 s compile is that wrapper. Here the
wrapper is generated as source text specific to the model's shared variables, registered with PyTensor's
numba cache locator under a key that includes PyTensor's own key for the inner function, and compiled with
``cache=True``: a warm process loads both from disk (about 1 s in all, most of it PyTensor building the
graph), a cold one compiles a smaller wrapper (about 5 s instead of 8-9 s).

The wrapper is a drop-in replacement: it reads nutpie's ``user_data`` record (pointer, size and shape of each
shared variable, all 8-byte fields) and calls the very same PyTensor function, so the draws are bit-for-bit
those of ``nutpie.compile_pymc_model`` with the same seed (tested in ``tests/test_compiled.py``). Should the
nutpie internals it relies on change, :func:`compile_pymc_model` falls back to ``nutpie.compile_pymc_model``
and says so in ``last_path``.

The fence around those internals (each failure falls back to nutpie's own compiler with a warning):

* the fast path runs only on the nutpie and PyTensor series it was tested with (:data:`TESTED`);
* nutpie's ``user_data`` record is checked field by field (byte offset of every pointer, size and shape)
  against the layout the generated wrapper reads;
* before the compiled model is returned, the wrapper's log density and gradient at one point are compared with
  those of the PyTensor function nutpie wraps (they must agree to rounding);
* ``RESCUEMETA_FAST_COMPILE=0`` in the environment turns the fast path off.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import threading
import warnings
from functools import wraps

import numba
import numpy as np
from numba.core import cgutils, types
from numba.extending import intrinsic

__all__ = ["WRAPPER_VERSION", "GRAPH_CACHE_VERSION", "TESTED", "FastPathUnavailable", "check_layout",
           "check_one_point", "LOGP_SIG", "EXPAND_SIG", "user_data_layout", "compile_pymc_model", "compile_structure",
           "graph_cache_dir"]

log = logging.getLogger(__name__)

# Bump when the generated source or its calling convention changes (part of every cache key).
WRAPPER_VERSION = "rescuemeta-cfunc-3"

# "fast": our cached wrapper; "nutpie": nutpie.compile_pymc_model (fallback). Set by the last compile.
last_path: str | None = None

# the nutpie and PyTensor release series the fast path is tested with (tests/test_compiled.py)
TESTED = {"nutpie": "0.16.", "pytensor": "2.38."}


class FastPathUnavailable(RuntimeError):
    """The cached wrapper cannot be trusted here (untested versions, another record layout, a mismatch)."""


def _fast_path_allowed() -> None:
    import nutpie
    import pytensor

    if os.environ.get("RESCUEMETA_FAST_COMPILE", "1").strip().lower() in ("0", "false", "no", "off"):
        raise FastPathUnavailable("turned off by RESCUEMETA_FAST_COMPILE")
    for name, module in (("nutpie", nutpie), ("pytensor", pytensor)):
        if not module.__version__.startswith(TESTED[name]):
            raise FastPathUnavailable(f"{name} {module.__version__} is not the tested {TESTED[name]}x series")


def _field(dt: np.dtype, name: str) -> tuple[np.dtype, int]:
    fields = dt.fields
    if fields is None or name not in fields:
        raise KeyError(name)
    return fields[name][0], fields[name][1]


def check_layout(user_data: np.ndarray, layout: dict) -> None:
    """Raise FastPathUnavailable unless every field of nutpie's record sits where :func:`user_data_layout` says
    (the byte offset of each variable's data pointer, size and shape, and the shape's length)."""
    try:
        shared, base = _field(user_data.dtype, "shared")
        for name, (i_ptr, i_size, i_shape, ndim, _) in layout.items():
            for part, word in (("data", i_ptr), ("size", i_size), ("shape", i_shape)):
                sub, sub_offset = _field(shared, part)
                field_dt, offset = _field(sub, name)
                offset += base + sub_offset
                if offset != 8 * word:
                    raise FastPathUnavailable(f"user_data field shared.{part}.{name} at byte {offset}, expected "
                                              f"{8 * word}")
                if part == "shape" and field_dt.itemsize != 8 * ndim:
                    raise FastPathUnavailable(f"user_data field shared.shape.{name} holds {field_dt.itemsize // 8} "
                                              f"values, expected {ndim}")
    except (KeyError, TypeError) as exc:
        raise FastPathUnavailable(f"nutpie's user_data record has another structure (no field {exc})") from None


def check_one_point(compiled) -> None:
    """Raise FastPathUnavailable unless the wrapper's log density and gradient at one point equal those of the
    PyTensor function nutpie wraps (to rounding): the wrapper reads every shared array through the record."""
    n = compiled._n_dim
    x = np.linspace(-0.3, 0.4, n) if n > 1 else np.array([0.1])
    grad, logp = np.zeros(n), np.zeros(())
    dbl = ctypes.POINTER(ctypes.c_double)
    rc = compiled.compiled_logp_func.ctypes(n, x.ctypes.data_as(dbl), grad.ctypes.data_as(dbl),
                                            logp.ctypes.data_as(dbl), compiled.user_data.ctypes.data_as(ctypes.c_void_p))
    ref_logp, ref_grad = compiled.logp_func(x)
    if rc != 0 or not (np.allclose(logp, ref_logp, rtol=1e-12, atol=1e-12)
                       and np.allclose(grad, ref_grad, rtol=1e-12, atol=1e-12)):
        raise FastPathUnavailable(f"the cached wrapper gives log density {float(logp):.17g} (code {rc}) where "
                                  f"nutpie's function gives {float(ref_logp):.17g}")


@intrinsic
def _void_ptr(typingctx, src):
    """An integer address as a ``void*`` (used on the pointers stored in nutpie's user_data record)."""
    sig = types.voidptr(src)

    def codegen(cgctx, builder, sig, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return sig, codegen


LOGP_SIG = types.int64(types.uint64, types.CPointer(types.double), types.CPointer(types.double),
                       types.CPointer(types.double), types.voidptr)
EXPAND_SIG = types.int64(types.uint64, types.uint64, types.CPointer(types.double), types.CPointer(types.double),
                         types.voidptr)

# The work is done in a separate njit function, so that the cfunc's try/except wraps a single call: with the
# array set-up inside the try block numba's liveness analysis took ~55 s on these models.
_LOGP_SRC = """
@numba.njit(inline="never")
def body(x_, out_, logp_, user_data_):
    x = numba.carray(x_, ({n_dim},))
    out = numba.carray(out_, ({n_dim},))
    logp = numba.carray(logp_, ())
    ud = numba.carray(user_data_, ({n_ud},), np.uint64)
{arrays}
    logp_val, grad = inner(x, {args})
    logp[()] = logp_val
    out[...] = grad
    if not np.all(np.isfinite(out)):
        return 3
    if not np.isfinite(logp_val):
        return 4
    return 0


def logp_c(dim, x_, out_, logp_, user_data_):
    if dim != {n_dim}:
        return -1
    try:
        return body(x_, out_, logp_, user_data_)
    except Exception:
        return 1
"""

_EXPAND_SRC = """
@numba.njit(inline="never")
def body(x_, out_, user_data_):
    x = numba.carray(x_, ({n_dim},))
    out = numba.carray(out_, ({n_expanded},))
    ud = numba.carray(user_data_, ({n_ud},), np.uint64)
{arrays}
    (values,) = inner(x, {args})
    out[...] = values
    return 0


def expand_c(dim, expanded, x_, out_, user_data_):
    if dim != {n_dim}:
        return -1
    if expanded != {n_expanded}:
        return -1
    try:
        return body(x_, out_, user_data_)
    except Exception:
        return -2
"""

# the same return codes as nutpie's own wrappers: -1 wrong size, 1/-2 an exception, 3/4 non-finite gradient/logp


def user_data_layout(names: list[str], shared_data: dict) -> tuple[dict, int]:
    """Offsets (in 8-byte words) of each shared variable's pointer, size and shape in nutpie's user_data record.

    nutpie's record (``make_user_data``) is ``shared: {data: {name: uintp}, size: {name: uintp},
    shape: {name: uint[ndim]}}`` in the order of ``names``: all fields are 8 bytes, so the record is an array
    of ``2 n + sum(ndim)`` uint64. Returns ``({name: (ptr, size, shape, ndim, dtype)}, total words)``.
    """
    n = len(names)
    layout, off = {}, 2 * n
    for i, name in enumerate(names):
        arr = shared_data[name]
        layout[name] = (i, n + i, off, arr.ndim, arr.dtype)
        off += arr.ndim
    return layout, off


def _arrays_src(names: list[str], layout: dict) -> tuple[str, str]:
    lines, args = [], []
    for j, name in enumerate(names):
        i_ptr, _, i_shape, ndim, dtype = layout[name]
        shape = "(" + "".join(f"int(ud[{i_shape + d}]), " for d in range(ndim)) + ")"
        lines.append(f"    a{j} = numba.carray(_void_ptr(ud[{i_ptr}]), {shape}, np.{np.dtype(dtype).name})")
        args.append(f"a{j}")
    return "\n".join(lines), ", ".join(args)


def _cache_key(src: str, inner) -> str | None:
    from pytensor.link.numba.cache import CACHED_SRC_FUNCTIONS

    py_func = getattr(inner, "py_func", None)
    inner_key = CACHED_SRC_FUNCTIONS.get(py_func) if py_func is not None else None
    if inner_key is None:  # PyTensor could not cache the inner function: nothing stable to key on
        return None
    import llvmlite

    parts = [WRAPPER_VERSION, src, inner_key, numba.__version__, llvmlite.__version__]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _remove_cache_entries(key: str) -> None:
    from pytensor.link.numba.cache import NUMBA_CACHE_PATH

    for f in NUMBA_CACHE_PATH.glob(f"*{key}*"):
        try:
            f.unlink()
        except OSError:
            pass


def _cfunc(src: str, name: str, sig, inner):
    """Compile ``name`` from ``src`` as a cfunc calling ``inner``; cached on disk when ``inner`` is."""
    from pytensor.link.numba.cache import compile_numba_function_src

    key = _cache_key(src, inner)

    def build(cache: bool):
        env = globals() | {"inner": inner}  # module globals: numba rebuilds the environment by module name
        fn = compile_numba_function_src(src, name, global_env=env, local_env=env, cache_key=key if cache else None)
        return numba.cfunc(sig, cache=cache)(fn)

    if key is None:
        return build(False)
    try:
        return build(True)
    except Exception as exc:
        log.warning("numba cache entry for %s unusable (%s); recompiling", name, exc)
        _remove_cache_entries(key)
        return build(True)


def _with_lock(func):
    lock = threading.Lock()

    @wraps(func)
    def wrapper(*args, **kwargs):
        with lock:
            return func(*args, **kwargs)

    return wrapper


def _seeded_initial_point(func, varnames):
    """PyMC's seeded initial-point function (``make_initial_point_fn``'s ``inner``) around a compiled ``func``."""
    from pymc.pytensorf import find_rng_nodes, reseed_rngs

    rngs = find_rng_nodes(func.maker.fgraph.outputs)

    def inner(seed, *args, **kwargs):
        reseed_rngs(rngs, seed)
        return dict(zip(varnames, func(*args, **kwargs), strict=True))

    return inner


def _function_state(fn) -> tuple:
    """What rebuilds a compiled PyTensor function without rewriting its graph again (see :func:`_function`): its
    rewritten graph, with the inputs and outputs re-pointed into it as ``Function.copy`` does (the updates of
    random generators become outputs of the graph), so that nothing of the unrewritten graph is kept."""
    import copy

    from pytensor.compile.io import SymbolicOutput

    m = fn.maker
    fg = m.fgraph
    rev = {v: k for k, v in fg.update_mapping.items()}
    ins = []
    for n, (inp, var) in enumerate(zip(m.inputs, fg.inputs, strict=True)):
        c = copy.copy(inp)
        c.variable = var
        c.update = fg.outputs[rev[n]] if inp.update is not None else None
        ins.append(c)
    outs = [SymbolicOutput(v, borrow=o.borrow) for v, o in zip(fg.outputs, m.outputs, strict=False)]
    outs += [SymbolicOutput(v) for v in fg.outputs[len(m.outputs):]]
    return (ins, outs, fg, m.mode, m.output_keys, m.name, m.trust_input)


def _function(state: tuple):
    """A PyTensor function from its rewritten graph (:func:`_function_state`), as ``Function.copy`` rebuilds one:
    no graph rewrites, only the linker (numba's code comes from its disk cache)."""
    from pytensor.compile.function.types import FunctionMaker

    ins, outs, fgraph, mode, output_keys, name, trust_input = state
    maker = FunctionMaker(ins, outs, mode=mode, fgraph=fgraph, no_fgraph_prep=True, accept_inplace=True,
                          on_unused_input="ignore", output_keys=output_keys, name=name, trust_input=trust_input)
    return maker.create([i.value for i in ins])


def _compile_fast(model):
    """nutpie's ``_compile_pymc_model_numba`` with cached wrappers (same functions, same record, same order).

    Returns the compiled model and the state :func:`_assemble` rebuilds it from in another process."""
    import nutpie.compile_pymc as ncp
    from pymc.initial_point import make_initial_point_fn

    # compile_pymc_model(model, freeze_model=False) defaults: support_point with jitter on every free RV
    ipf = make_initial_point_fn(model=model, overrides=None, default_strategy="support_point",
                                jitter_rvs=set(model.free_RVs), return_transformed=True)
    n_dim, n_expanded, logp_pt, expand_pt, _, shape_info = ncp._make_functions(
        model, mode="NUMBA", compute_grad=True, join_expanded=True, pymc_initial_point_fn=_with_lock(ipf),
        var_names=None)
    varnames = list(ipf(0))  # the free variables' (transformed) names, in the order of PyMC's function
    dims, coords = ncp._prepare_dims_and_coords(model, shape_info)
    state = {"n_dim": n_dim, "n_expanded": n_expanded, "shape_info": shape_info, "dims": dims, "coords": coords,
             "logp": _function_state(logp_pt), "expand": _function_state(expand_pt),
             "initial": _function_state(ipf.__wrapped__), "varnames": varnames}
    return _assemble(state, logp_pt, expand_pt, ipf.__wrapped__), state


def _assemble(state: dict, logp_pt=None, expand_pt=None, initial_pt=None):
    """The compiled nutpie model from :func:`_compile_fast`'s state (the PyTensor functions rebuilt from their
    rewritten graphs unless given), with the cached C wrappers."""
    import nutpie.compile_pymc as ncp

    logp_pt = logp_pt if logp_pt is not None else _function(state["logp"])
    expand_pt = expand_pt if expand_pt is not None else _function(state["expand"])
    initial_pt = initial_pt if initial_pt is not None else _function(state["initial"])
    n_dim, n_expanded, shape_info, varnames = state["n_dim"], state["n_expanded"], state["shape_info"], \
        state["varnames"]
    # as nutpie's _make_functions: the free variables come first in shape_info
    initial_point_fn = ncp._rv_dict_to_flat_array_wrapper(
        _with_lock(_seeded_initial_point(initial_pt, varnames)), names=list(shape_info[0][:len(varnames)]),
        shapes=list(shape_info[2][:len(varnames)]))
    shared_data, shared_vars, seen = {}, {}, set()
    for val in [*logp_pt.get_shared(), *expand_pt.get_shared()]:
        if val.name in shared_data and val not in seen:
            raise ValueError(f"Shared variables must have unique names: {val.name}")
        shared_data[val.name] = np.array(val.get_value(), order="C", copy=True)
        shared_vars[val.name] = val
        seen.add(val)
    for arr in shared_data.values():
        arr.flags.writeable = False
    user_data = ncp.make_user_data(shared_vars, shared_data)
    layout, n_ud = user_data_layout(list(shared_vars), shared_data)
    if user_data.dtype.itemsize != 8 * n_ud:
        raise FastPathUnavailable(f"unexpected nutpie user_data size ({user_data.dtype.itemsize} bytes, expected "
                                  f"{8 * n_ud})")
    check_layout(user_data, layout)

    arrays, args = _arrays_src([v.name for v in logp_pt.get_shared()], layout)
    logp_c = _cfunc(_LOGP_SRC.format(n_dim=n_dim, n_ud=n_ud, arrays=arrays, args=args), "logp_c", LOGP_SIG,
                    logp_pt.vm.jit_fn)
    arrays, args = _arrays_src([v.name for v in expand_pt.get_shared()], layout)
    expand_c = _cfunc(_EXPAND_SRC.format(n_dim=n_dim, n_expanded=n_expanded, n_ud=n_ud, arrays=arrays, args=args),
                      "expand_c", EXPAND_SIG, expand_pt.vm.jit_fn)
    compiled = ncp.CompiledPyMCModel(
        _n_dim=n_dim, dims=state["dims"], _coords=state["coords"],
        _shapes={name: tuple(shape) for name, _, shape in zip(*shape_info)},
        compiled_logp_func=logp_c, compiled_expand_func=expand_c, initial_point_func=initial_point_fn,
        shared_data=shared_data, user_data=user_data, n_expanded=n_expanded, shape_info=shape_info,
        logp_func=logp_pt, expand_func=expand_pt)
    check_one_point(compiled)
    return compiled


def compile_pymc_model(model, *, fast: bool = True):
    """Compile ``model`` for nutpie: the equivalent of ``nutpie.compile_pymc_model(model, freeze_model=False)``.

    Parameters
    ----------
    model : pymc.Model
    fast : bool
        Use the disk-cached wrapper (default). ``False`` calls nutpie's own compiler.

    Returns
    -------
    nutpie.compiled_pyfunc.CompiledPyMCModel
        Sample it with ``nutpie.sample``; ``with_data`` swaps shared values without recompiling. Which path was
        taken is in :data:`last_path` (``"fast"`` or ``"nutpie"``).
    """
    return _compile(model, fast)[0]


def _compile(model, fast: bool):
    global last_path
    import nutpie
    import pytensor

    # IEEE arithmetic, not numba's fastmath: with fastmath, code loaded from the disk cache rounds differently from
    # code compiled in the process (LLVM contracts and reassociates differently across inlined and cached
    # functions), so the same seed gave other draws on a warm cache than on a cold one. PyTensor's cache key
    # includes the flag; the change is scoped to this compilation (numba reads it when the functions are built).
    with pytensor.config.change_flags(numba__fastmath=False):
        if fast:
            try:
                _fast_path_allowed()
                compiled, state = _compile_fast(model)
                last_path = "fast"
                return compiled, state
            except FastPathUnavailable as exc:
                reason = str(exc)
            except Exception as exc:  # any failure of nutpie/PyTensor internals: use nutpie's own
                reason = repr(exc)
            if "RESCUEMETA_FAST_COMPILE" not in reason:
                warnings.warn(f"rescuemeta's cached nutpie compilation is unavailable ({reason}); using "
                              "nutpie.compile_pymc_model (slower to compile, same draws)", RuntimeWarning,
                              stacklevel=2)
        last_path = "nutpie"
        return nutpie.compile_pymc_model(model, freeze_model=False), None


# ---------------------------------------------------------------------------------------------------------------
# The rewritten graphs, cached on disk per model structure.
#
# A new process that finds numba's code on disk still spent 5-9 s here before sampling (measured, session 11):
# PyMC building the model and its log density, the gradient, and above all PyTensor rewriting the graph
# (3-4 s for the binomial graph's ~150 nodes), every time. The rewritten graphs of the three functions nutpie
# needs (log density and gradient, the expansion to the trace's variables, the initial point) are pickled after a
# compile, beside numba's cache in PyTensor's compile directory, under a key made of the caller's structure key,
# the library versions and the package's source fingerprint; a later process rebuilds the functions from them
# (only the linker runs, loading numba's code from its cache). The rebuilt model is checked at one point like any
# other (:func:`check_one_point`), and a file that cannot be read is removed and the model compiled again.

GRAPH_CACHE_VERSION = "rescuemeta-graphs-1"

# "disk": the last compile_structure loaded the rewritten graphs; "built": it built and compiled the model
last_graph: str | None = None


def graph_cache_dir():
    """Where the rewritten graphs are kept: ``rescuemeta-graphs`` beside PyTensor's numba cache in its base compile
    directory (so that ``PYTENSOR_FLAGS=base_compiledir=...`` moves or empties both)."""
    from pathlib import Path

    import pytensor

    return Path(pytensor.config.base_compiledir) / "rescuemeta-graphs"


def _graph_key(structure) -> str:
    import llvmlite
    import nutpie
    import pymc
    import pytensor

    from .atomic import cache_key

    return cache_key({"structure": repr(structure), "cache": GRAPH_CACHE_VERSION, "wrapper": WRAPPER_VERSION,
                      "versions": [m.__version__ for m in (pymc, pytensor, nutpie, numba, llvmlite, np)]}, 32)


def _graph_cache_enabled() -> bool:
    return os.environ.get("RESCUEMETA_GRAPH_CACHE", "1").strip().lower() not in ("0", "false", "no", "off")


def compile_structure(structure, build):
    """Compile the model ``build()`` returns, or rebuild it from the rewritten graphs an earlier process saved for
    the same ``structure`` (a hashable description that fixes the graph: :func:`rescuemeta.models.structure_key`).

    Parameters
    ----------
    structure
        Two calls with equal ``repr(structure)`` must build the same graph (data values may differ: they are
        ``pm.Data``, swapped with ``with_data``).
    build : callable
        Returns the ``pymc.Model``; called only when nothing usable is cached.

    Returns
    -------
    nutpie.compiled_pyfunc.CompiledPyMCModel
        As :func:`compile_pymc_model`. :data:`last_graph` says whether the graphs came from disk (``"disk"``) or
        were built (``"built"``).
    """
    global last_graph, last_path
    import pickle

    import pytensor

    use_cache = _graph_cache_enabled()
    path = graph_cache_dir() / f"{_graph_key(structure)}.pkl" if use_cache else None
    if path is not None and path.is_file():
        try:
            _fast_path_allowed()
            with pytensor.config.change_flags(numba__fastmath=False):
                compiled = _assemble(pickle.loads(path.read_bytes()))
            last_graph, last_path = "disk", "fast"
            return compiled
        except FastPathUnavailable:
            pass
        except Exception as exc:  # unreadable or stale: drop it and compile again
            log.warning("cached model graphs %s unusable (%r); compiling again", path.name, exc)
            with contextlib.suppress(OSError):
                path.unlink()
    compiled, state = _compile(build(), True)
    last_graph = "built"
    if path is not None and state is not None:
        try:
            blob = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
            from .atomic import atomic_path

            with atomic_path(path) as tmp:
                tmp.write_bytes(blob)
        except Exception as exc:  # a cache that cannot be written costs time, never the fit
            log.warning("could not cache the model graphs (%r)", exc)
    return compiled
