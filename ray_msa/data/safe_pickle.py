"""Load the field's pickles without running their code.

MMSA and MulT ship datasets as pickles, and `pickle.load` executes whatever the file
names (`os.system`, any importable callable). This unpickler resolves only the globals
that NumPy arrays, dtypes and scalars need, plus builtin containers; every other global
is refused before anything is called, and the refusal names the offending global.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ray_msa.errors import InputError


def _numpy_globals() -> dict[tuple[str, str], Any]:
    from numpy._core import multiarray, numeric  # NumPy 2 only: read after numpy has loaded

    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # NumPy 1.x and 2.x spell them differently
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        allowed[(module, "_frombuffer")] = numeric._frombuffer
    for name in (
        "float16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "bool_",
        "str_",
        "bytes_",
    ):
        allowed[("numpy", name)] = getattr(np, name)
    for module in ("numpy.dtypes", "numpy._core.dtypes"):  # NumPy >= 1.25 pickles dtype classes by name
        for name in dir(np.dtypes):
            if name.endswith("DType"):
                allowed[(module, name)] = getattr(np.dtypes, name)
    return allowed


ALLOWED: dict[tuple[str, str], Any] = {
    **_numpy_globals(),
    **{
        (b, name): getattr(builtins, name)
        for b in ("builtins", "__builtin__")
        for name in ("dict", "list", "tuple", "set", "frozenset", "bytearray", "complex", "slice")
    },
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): codecs.encode,  # protocol-2 pickles store bytes as latin-1 text
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only build NumPy arrays, NumPy scalars and builtin containers."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}") from None


def load_pickle(path: str | Path, what: str = "pickle") -> Any:
    """Unpickle `path` safely; any failure becomes one InputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, what, "file not found", "put the file at this path or pass --data DIR")
    try:
        with path.open("rb") as handle:
            return RestrictedUnpickler(handle, encoding="latin1").load()
    except pickle.UnpicklingError as err:
        if str(err).startswith("refused global"):
            raise InputError(
                path,
                what,
                f"{err}: this pickle holds more than NumPy arrays and containers, and loading it would run code",
                "export the data as NumPy arrays in dicts (the MMSA/MulT layout), or convert it to HDF5",
            ) from None
        raise InputError(path, what, f"not a readable pickle ({err})", "re-download or re-export the file") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError, OverflowError) as err:
        with path.open("rb") as handle:
            head = handle.read(2)
        if head[:1] != b"\x80":  # every pickle of protocol 2 or later starts with PROTO
            problem = f"not a pickle (starts with {head!r})"
        elif isinstance(err, EOFError):
            problem = "truncated (ended early)"
        else:
            problem = f"not a readable pickle ({type(err).__name__}: {err})"
        raise InputError(path, what, problem, "re-download or re-export the file") from None
