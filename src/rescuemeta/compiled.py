"""The compile step of the sampling stage: a PyMC model turned into the C callbacks nutpie samples, cached on
disk so that a new process does not pay numba's compilation again.

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
"""

from __future__ import annotations

import hashlib
import logging
import threading
import warnings
from functools import wraps

import numba
import numpy as np
from numba.core import cgutils, types
from numba.extending import intrinsic

log = logging.getLogger(__name__)

# Bump when the generated source or its calling convention changes (part of every cache key).
WRAPPER_VERSION = "rescuemeta-cfunc-3"

# "fast": our cached wrapper; "nutpie": nutpie.compile_pymc_model (fallback). Set by the last compile.
last_path: str | None = None


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


def _compile_fast(model):
    """nutpie's ``_compile_pymc_model_numba`` with cached wrappers (same functions, same record, same order)."""
    import nutpie.compile_pymc as ncp
    from pymc.initial_point import make_initial_point_fn

    # compile_pymc_model(model, freeze_model=False) defaults: support_point with jitter on every free RV
    ipf = make_initial_point_fn(model=model, overrides=None, default_strategy="support_point",
                                jitter_rvs=set(model.free_RVs), return_transformed=True)
    n_dim, n_expanded, logp_pt, expand_pt, initial_point_fn, shape_info = ncp._make_functions(
        model, mode="NUMBA", compute_grad=True, join_expanded=True, pymc_initial_point_fn=_with_lock(ipf),
        var_names=None)
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
        raise TypeError(f"unexpected nutpie user_data layout ({user_data.dtype.itemsize} bytes, expected {8 * n_ud})")

    arrays, args = _arrays_src([v.name for v in logp_pt.get_shared()], layout)
    logp_c = _cfunc(_LOGP_SRC.format(n_dim=n_dim, n_ud=n_ud, arrays=arrays, args=args), "logp_c", LOGP_SIG,
                    logp_pt.vm.jit_fn)
    arrays, args = _arrays_src([v.name for v in expand_pt.get_shared()], layout)
    expand_c = _cfunc(_EXPAND_SRC.format(n_dim=n_dim, n_expanded=n_expanded, n_ud=n_ud, arrays=arrays, args=args),
                      "expand_c", EXPAND_SIG, expand_pt.vm.jit_fn)
    dims, coords = ncp._prepare_dims_and_coords(model, shape_info)
    return ncp.CompiledPyMCModel(
        _n_dim=n_dim, dims=dims, _coords=coords,
        _shapes={name: tuple(shape) for name, _, shape in zip(*shape_info)},
        compiled_logp_func=logp_c, compiled_expand_func=expand_c, initial_point_func=initial_point_fn,
        shared_data=shared_data, user_data=user_data, n_expanded=n_expanded, shape_info=shape_info,
        logp_func=logp_pt, expand_func=expand_pt)


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
                compiled = _compile_fast(model)
                last_path = "fast"
                return compiled
            except (AttributeError, ImportError, TypeError, KeyError) as exc:  # nutpie/PyTensor internals changed
                warnings.warn(f"rescuemeta's cached nutpie compilation is unavailable ({exc!r}); using "
                              "nutpie.compile_pymc_model (slower to compile, same draws)", RuntimeWarning,
                              stacklevel=2)
        last_path = "nutpie"
        return nutpie.compile_pymc_model(model, freeze_model=False)
