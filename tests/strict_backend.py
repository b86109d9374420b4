"""A TEST DOUBLE for CuPy: a strict "device" array backend that runs on NumPy, for the CPU suite.

This is not a backend to train with and not an emulation of a GPU. It exists so that the CPU test
suite can check the CuPy DISCIPLINE of the engine without a GPU (the real check is ``.ci/gpu``):

* ``StrictArray`` wraps a NumPy array (the "device" memory) and refuses every implicit trip to
  the host, as CuPy's arrays do: ``np.asarray(a)`` / ``a.__array__()`` raise TypeError, and so do
  ``float(a)``, ``int(a)``, ``bool(a)`` (``if a:``), ``a.item()`` and ``a.tolist()`` (stricter
  than CuPy, which allows the scalar ones: each is a hidden device sync, which this project keeps
  out of the training step). A NumPy function or ufunc applied to one (``np.exp(a)``) raises too.
  Mixing a host ``np.ndarray`` into device arithmetic raises, as in CuPy.
* The explicit copies are the only way across, and each one is COUNTED in :data:`COPIES`:
  ``a.get()`` (what ``backend.to_numpy`` calls) is device -> host; ``xp.asarray`` /
  ``xp.array`` / ``xp.ascontiguousarray`` of host data (``backend.to_device``) and indexing with
  a host index array are host -> device. :func:`counting` reports the copies inside a block.
* The module object :data:`xp` exposes only names that CuPy also provides (a whitelist below,
  each checked against CuPy's API by hand); asking for a NumPy-only name (``xp.fromiter``) is an
  AttributeError, as it would be on CuPy.
* CuPy's custom kernels (``RawModule``, ``ElementwiseKernel``), which the fused ops in
  ``minispanbert/fused`` use on CuPy, run through ``tests/cuda_emulator.py`` (g++ and OpenMP);
  ``cupyx.scipy.special.erf`` is provided by :func:`install_cupyx` for the plain GeLU.

Nothing in ``minispanbert`` knows about this module: the engine takes ``xp`` as an argument,
``backend.to_numpy`` calls ``.get()`` on anything that is not a NumPy array, and dropout masks
are drawn on the host and copied with ``xp.asarray`` (:mod:`minispanbert.keyed_random`), so the
double plugs in by being passed as ``xp``; it has no ``xp.random``. ``backend.backend_name`` calls it "cupy" and the fused CuPy paths run, as on a GPU.
"""
from __future__ import annotations

import contextlib
import sys
import types
from collections import Counter

import numpy as np

import cuda_emulator

COPIES = Counter()  # "host_to_device" and "device_to_host": every explicit copy, ever


@contextlib.contextmanager
def counting():
    """``with counting() as copies:`` -> ``copies`` holds the copies made inside the block."""
    before = Counter(COPIES)
    seen = Counter()
    try:
        yield seen
    finally:
        seen.update({k: COPIES[k] - before[k] for k in ("host_to_device", "device_to_host")})


class ImplicitHostConversion(TypeError):
    """Raised where CuPy would refuse (or where a hidden device sync would hide) a host conversion."""


def _refuse(what: str):
    raise ImplicitHostConversion(
        f"{what} on a device array: implicit conversion to the host is not allowed; "
        "use backend.to_numpy (an explicit, counted copy) where a host value is really needed")


def _unwrap(value, *, index=False):
    """StrictArray -> its NumPy data; containers recursively. A host ndarray is refused in device
    arithmetic (as CuPy does) and counted as a copy when used as an index."""
    if isinstance(value, StrictArray):
        return value._data
    if isinstance(value, np.ndarray):
        if index:
            COPIES["host_to_device"] += 1
            return value
        raise ImplicitHostConversion(
            "a host numpy.ndarray mixed into device arithmetic: move it with xp.asarray first (CuPy raises here too)")
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, index=index) for v in value)
    return value


def _wrap(value):
    """NumPy results -> device arrays (CuPy returns 0-d arrays, never host scalars, from reductions)."""
    if isinstance(value, np.ndarray):
        return StrictArray(value)
    if isinstance(value, np.generic):
        return StrictArray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _device_call(fn):
    def call(*args, **kwargs):
        out = kwargs.get("out")
        result = fn(*_unwrap(list(args)), **{k: _unwrap(v) for k, v in kwargs.items()})
        return out if out is not None else _wrap(result)
    call.__name__ = getattr(fn, "__name__", "function")
    return call


class StrictArray:
    """A "device" array: NumPy data that never leaves implicitly (see the module docstring)."""

    __slots__ = ("_data",)
    __array_priority__ = 1000

    def __init__(self, data: np.ndarray):
        self._data = data

    # --- the explicit, counted way to the host
    def get(self):
        COPIES["device_to_host"] += 1
        return self._data.copy()

    # --- every implicit way refuses
    def __array__(self, *args, **kwargs):
        _refuse("np.asarray / __array__")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _refuse(f"the NumPy ufunc np.{ufunc.__name__}")

    def __array_function__(self, func, types, args, kwargs):
        _refuse(f"the NumPy function np.{func.__name__}")

    def __float__(self):
        _refuse("float()")

    def __int__(self):
        _refuse("int()")

    def __index__(self):
        _refuse("use as a Python index")

    def __bool__(self):
        _refuse("bool() (an `if` on a device value)")

    def __complex__(self):
        _refuse("complex()")

    def item(self, *args):
        _refuse(".item()")

    def tolist(self):
        _refuse(".tolist()")

    def __iter__(self):
        return (StrictArray(np.asarray(row)) for row in self._data)

    # --- attributes
    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: self._data.size)
    nbytes = property(lambda self: self._data.nbytes)
    itemsize = property(lambda self: self._data.itemsize)
    strides = property(lambda self: self._data.strides)
    flags = property(lambda self: self._data.flags)
    T = property(lambda self: StrictArray(self._data.T))

    def __len__(self):
        return len(self._data)

    def __repr__(self):
        return f"StrictArray(shape={self.shape}, dtype={self.dtype})"

    # --- indexing
    def __getitem__(self, key):
        return _wrap(self._data[_unwrap(key, index=True)])

    def __setitem__(self, key, value):
        self._data[_unwrap(key, index=True)] = _unwrap(value)


def _method(name):
    def method(self, *args, **kwargs):
        return _device_call(getattr(self._data, name))(*args, **kwargs)
    method.__name__ = name
    return method


for _name in ("reshape", "transpose", "swapaxes", "astype", "copy", "sum", "mean", "max", "min", "argmax",
              "argmin", "any", "all", "ravel", "squeeze", "cumsum", "std", "var", "dot", "fill", "view",
              "prod", "clip", "take", "repeat", "nonzero", "argsort", "sort", "flatten"):
    setattr(StrictArray, _name, _method(_name))

for _name in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
              "lshift", "rshift"):
    for _form in (f"__{_name}__", f"__r{_name}__", f"__i{_name}__"):
        if hasattr(np.ndarray, _form):
            def _operator(self, other, _form=_form):
                result = getattr(self._data, _form)(_unwrap(other))
                if result is NotImplemented:
                    return NotImplemented
                return self if _form.startswith("__i") else _wrap(result)
            setattr(StrictArray, _form, _operator)

for _form in ("__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
    setattr(StrictArray, _form, lambda self, other, _form=_form: _wrap(getattr(self._data, _form)(_unwrap(other))))
for _form in ("__neg__", "__pos__", "__abs__", "__invert__"):
    setattr(StrictArray, _form, lambda self, _form=_form: _wrap(getattr(self._data, _form)()))
StrictArray.__hash__ = None


class _Ufunc:
    """A CuPy ufunc: callable, with ``out=``, and ``.at`` (CuPy >= 13) for scatter_add."""

    def __init__(self, ufunc):
        self._ufunc = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        return _device_call(self._ufunc)(*args, **kwargs)

    def at(self, a, indices, values=None):
        args = (_unwrap(indices, index=True),) + (() if values is None else (_unwrap(values),))
        self._ufunc.at(_unwrap(a), *args)

    def reduce(self, *args, **kwargs):
        return _device_call(self._ufunc.reduce)(*args, **kwargs)


def _from_host(fn):
    """xp.asarray & co.: host data in, device array out, one counted host -> device copy (none
    when the argument already is a device array, as in CuPy)."""
    def make(obj, *args, **kwargs):
        if isinstance(obj, StrictArray):
            return _wrap(fn(obj._data, *args, **kwargs))
        COPIES["host_to_device"] += 1
        return StrictArray(np.array(fn(obj, *args, **kwargs)))
    make.__name__ = fn.__name__
    return make


class _MemoryPool:
    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0


class _Stream:
    def synchronize(self):
        pass


# Names CuPy provides (each checked against the CuPy 13 API reference), nothing else.
UFUNCS = ("add", "subtract", "multiply", "divide", "true_divide", "floor_divide", "power", "negative", "absolute",
          "abs", "sqrt", "square", "exp", "expm1", "log", "log1p", "log2", "tanh", "sin", "cos", "maximum", "minimum",
          "equal", "not_equal", "greater", "greater_equal", "less", "less_equal", "logical_and", "logical_or",
          "logical_not", "isfinite", "isnan", "isinf", "sign", "floor", "ceil", "reciprocal", "fmax", "fmin")
FUNCTIONS = ("zeros_like", "ones_like", "empty_like", "full_like", "stack", "concatenate", "where", "matmul",
             "dot", "vdot", "einsum", "sum", "mean", "max", "min", "amax", "amin", "argmax", "argmin", "any", "all",
             "clip", "broadcast_to", "expand_dims", "squeeze", "transpose", "swapaxes", "moveaxis", "reshape",
             "take", "take_along_axis", "cumsum", "sort", "argsort", "unique", "bincount", "count_nonzero",
             "allclose", "array_equal", "isclose", "outer", "tril", "triu", "split", "repeat", "tile", "flip",
             "searchsorted", "prod", "std", "var", "nonzero", "flatnonzero", "copyto", "tensordot", "pad",
             "linspace", "round", "diff", "logaddexp")
CREATORS = ("zeros", "ones", "empty", "full", "arange", "eye", "identity")
TYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint32", "uint64",
         "bool_", "dtype", "finfo", "iinfo", "newaxis", "pi", "inf", "nan", "e", "result_type", "can_cast",
         "intp", "complex64", "complex128")


def _build_module():
    xp = types.ModuleType("strict_cupy", "A strict device-array test double with CuPy's names (tests/strict_backend.py).")
    for name in UFUNCS:
        setattr(xp, name, _Ufunc(getattr(np, name)))
    for name in FUNCTIONS:
        setattr(xp, name, _device_call(getattr(np, name)))
    for name in CREATORS:  # made on the device: no host data crosses
        setattr(xp, name, (lambda fn: lambda *a, **k: StrictArray(fn(*_unwrap(list(a)), **k)))(getattr(np, name)))
    for name in TYPES:
        if hasattr(np, name):
            setattr(xp, name, getattr(np, name))
    xp.asarray = _from_host(np.asarray)
    xp.array = _from_host(np.array)
    xp.ascontiguousarray = _from_host(np.ascontiguousarray)
    xp.asnumpy = lambda a: a.get() if isinstance(a, StrictArray) else np.asarray(a)
    xp.ndarray = StrictArray
    xp.linalg = types.SimpleNamespace(norm=_device_call(np.linalg.norm))
    pool = _MemoryPool()
    xp.get_default_memory_pool = lambda: pool
    xp.cuda = types.SimpleNamespace(get_current_stream=lambda: _Stream(), Device=lambda *a: types.SimpleNamespace(id=0),
                                    runtime=types.SimpleNamespace(getDeviceCount=lambda: 1))
    xp.__version__ = "strict-test-double"
    emulated = cuda_emulator.EmulatedCuPy
    xp.RawModule = lambda **kwargs: _StrictRawModule(emulated.RawModule(**kwargs))
    xp.ElementwiseKernel = lambda *args: _StrictElementwiseKernel(emulated.ElementwiseKernel(*args))
    return xp


class _StrictRawModule:
    """cuda_emulator's RawModule, taking device arrays (their data is the "device pointer")."""

    def __init__(self, module):
        self._module = module

    def get_function(self, name):
        kernel = self._module.get_function(name)
        return lambda grid, block, args: kernel(grid, block, tuple(_unwrap(list(args))))


class _StrictElementwiseKernel:
    def __init__(self, kernel):
        self._kernel = kernel

    def __call__(self, *arrays):
        return _wrap(self._kernel(*_unwrap(list(arrays))))


xp = _build_module()


def install_cupyx(monkeypatch) -> None:
    """Provide ``cupyx.scipy.special.erf`` for device arrays (backend.erf imports it on CuPy)."""
    from scipy.special import erf

    special = types.ModuleType("cupyx.scipy.special")
    special.erf = _device_call(erf)
    scipy_module = types.ModuleType("cupyx.scipy")
    scipy_module.special = special
    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = scipy_module
    for name, module in (("cupyx", cupyx), ("cupyx.scipy", scipy_module), ("cupyx.scipy.special", special)):
        monkeypatch.setitem(sys.modules, name, module)


def to_device_tree(value):
    """Host arrays in a dict / dataclass-free structure -> device arrays (counted)."""
    if isinstance(value, dict):
        return {k: to_device_tree(v) for k, v in value.items()}
    return xp.asarray(value) if isinstance(value, np.ndarray) else value
