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

The fence around those internals (each failure falls back to nutpie's own compiler with a warning):

* the fast path runs only on the nutpie and PyTensor series it was tested with (:data:`TESTED`);
* nutpie's ``user_data`` record is checked field by field (byte offset of every pointer, size and shape)
  against the layout the generated wrapper reads;
* before the compiled model is returned, the wrapper's log density and gradient at one point are compared with
  those of the PyTensor function nutpie wraps (they must agree to rounding);
* ``RESCUEMETA_FAST_COMPILE=0`` in the environment turns the fast path off.
"""

from __future__ import annotations

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

__all__ = ["WRAPPER_VERSION", "TESTED", "FastPathUnavailable", "check_layout", "check_one_point", "LOGP_SIG",
           "EXPAND_SIG", "user_data_layout", "compile_pymc_model"]

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
        raise FastPathUnavailable(f"unexpected nutpie user_data size ({user_data.dtype.itemsize} bytes, expected "
                                  f"{8 * n_ud})")
    check_layout(user_data, layout)

    arrays, args = _arrays_src([v.name for v in logp_pt.get_shared()], layout)
    logp_c = _cfunc(_LOGP_SRC.format(n_dim=n_dim, n_ud=n_ud, arrays=arrays, args=args), "logp_c", LOGP_SIG,
                    logp_pt.vm.jit_fn)
    arrays, args = _arrays_src([v.name for v in expand_pt.get_shared()], layout)
    expand_c = _cfunc(_EXPAND_SRC.format(n_dim=n_dim, n_expanded=n_expanded, n_ud=n_ud, arrays=arrays, args=args),
                      "expand_c", EXPAND_SIG, expand_pt.vm.jit_fn)
    dims, coords = ncp._prepare_dims_and_coords(model, shape_info)
    compiled = ncp.CompiledPyMCModel(
        _n_dim=n_dim, dims=dims, _coords=coords,
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
                compiled = _compile_fast(model)
                last_path = "fast"
                return compiled
            except FastPathUnavailable as exc:
                reason = str(exc)
            except Exception as exc:  # any failure of nutpie/PyTensor internals: use nutpie's own
                reason = repr(exc)
            if "RESCUEMETA_FAST_COMPILE" not in reason:
                warnings.warn(f"rescuemeta's cached nutpie compilation is unavailable ({reason}); using "
                              "nutpie.compile_pymc_model (slower to compile, same draws)", RuntimeWarning,
                              stacklevel=2)
        last_path = "nutpie"
        return nutpie.compile_pymc_model(model, freeze_model=False)
