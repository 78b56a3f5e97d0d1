"""Read the PCA of RALI's ``pca.pkl`` without running a pickle: a restricted unpickler.

RALI (arXiv 2510.11369, https://arxiv.org/abs/2510.11369) publishes its PCA as a
``joblib.dump`` of a scikit-learn ``PCA``. A pickle can run any code on load, so this reader
never calls ``pickle.load`` on it with the usual class lookup: :class:`PCAUnpickler` admits only

* the estimator class (``sklearn.decomposition[._pca].PCA`` / ``IncrementalPCA``), rebuilt as a
  plain attribute holder (:class:`PCAState`) without importing scikit-learn;
* numpy's own array and scalar reconstruction (``numpy.ndarray``, ``numpy.dtype``,
  ``numpy[._]core.multiarray._reconstruct`` / ``scalar``), for plain ``pickle.dump`` files;
* joblib's ``NumpyArrayWrapper``, whose array bytes follow it in the stream (joblib >= 0.10:
  one byte of padding length and the padding since joblib 1.2, then the raw C- or F-ordered
  data). Arrays of Python objects are refused.

Any other global (``os.system``, ``builtins.eval``, ...) raises :class:`UnsafePickleError`
naming the file and the global. Files compressed by ``joblib.dump(compress=...)`` with zlib,
gzip, bz2, lzma or xz are decompressed first; joblib's pre-0.10 formats are refused.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from iqa_lightning.errors import ConfigError

# Classes the estimator may be pickled as (module, name).
ESTIMATORS = {
    ("sklearn.decomposition._pca", "PCA"),
    ("sklearn.decomposition.pca", "PCA"),
    ("sklearn.decomposition", "PCA"),
    ("sklearn.decomposition._incremental_pca", "IncrementalPCA"),
    ("sklearn.decomposition", "IncrementalPCA"),
}
NUMPY_MODULES = ("numpy", "numpy.core.multiarray", "numpy._core.multiarray")
JOBLIB_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
# Magic prefixes of joblib.dump's compressors (joblib/compressor.py).
COMPRESSED = (
    (b"\x78", "zlib", zlib.decompress),
    (b"\x1f\x8b", "gzip", gzip.decompress),
    (b"BZ", "bz2", bz2.decompress),
    (b"\xfd\x37\x7a\x58\x5a", "xz", lzma.decompress),
    (b"\x5d\x00", "lzma", lzma.decompress),
)
OLD_JOBLIB = b"ZF"  # joblib < 0.10 zfile format


class UnsafePickleError(ConfigError):
    """A pickle asks for a global outside what a PCA file needs."""


class PCAFileError(ConfigError):
    """A PCA file that is not a readable pickled PCA."""


class PCAState:
    """The attributes of an unpickled PCA estimator (``mean_``, ``components_``, ...)."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("the estimator's state is not a dict")
        self.__dict__.update(state)


class _ArrayWrapper:
    """joblib's ``NumpyArrayWrapper``: the metadata of an array whose bytes follow it."""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def read(self, stream: io.BufferedIOBase) -> np.ndarray:
        dtype = self.__dict__.get("dtype")
        shape = tuple(int(x) for x in self.__dict__.get("shape", ()))
        if not isinstance(dtype, np.dtype):
            raise pickle.UnpicklingError("a joblib array wrapper without a numpy dtype")
        if dtype.hasobject:
            raise pickle.UnpicklingError("an array of Python objects (refused)")
        if self.__dict__.get("numpy_array_alignment_bytes") is not None:
            padding = stream.read(1)
            stream.read(int.from_bytes(padding, "little"))
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        data = stream.read(size)
        if len(data) != size:
            raise pickle.UnpicklingError("the file ends inside an array's data")
        array = np.frombuffer(data, dtype=dtype).copy()
        if self.__dict__.get("order") == "F":
            return array.reshape(shape[::-1]).transpose()
        return array.reshape(shape)


def _numpy_global(module: str, name: str) -> Any:
    allowed = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    if module in NUMPY_MODULES[1:] and name in ("_reconstruct", "scalar"):
        try:
            from numpy._core import multiarray
        except ImportError:  # numpy < 2
            from numpy.core import multiarray

        return getattr(multiarray, name)
    return allowed.get((module, name))


class PCAUnpickler(pickle._Unpickler):  # the pure-Python one: its dispatch table can be extended
    """An unpickler that builds only a PCA's attributes and numpy arrays (module docstring)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, stream: io.BufferedIOBase, path: Path) -> None:
        super().__init__(stream)
        self.stream = stream
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ESTIMATORS:
            return PCAState
        if (module, name) == JOBLIB_WRAPPER:
            return _ArrayWrapper
        found = _numpy_global(module, name)
        if found is None:
            raise UnsafePickleError(
                f"{self.path}: refused to unpickle global {module}.{name}; a PCA file may hold "
                "only a scikit-learn PCA and numpy arrays"
            )
        return found

    def load_build(self) -> None:
        super().load_build()
        if isinstance(self.stack[-1], _ArrayWrapper):
            self.stack.append(self.stack.pop().read(self.stream))

    dispatch[pickle.BUILD[0]] = load_build


def _decompressed(raw: bytes, path: Path) -> bytes:
    if raw.startswith(OLD_JOBLIB):
        raise PCAFileError(f"{path}: joblib < 0.10 compressed format; re-save it with joblib.dump")
    for prefix, name, decompress in COMPRESSED:
        if raw.startswith(prefix):
            try:
                return decompress(raw)
            except (zlib.error, OSError, EOFError, lzma.LZMAError) as err:
                raise PCAFileError(f"{path}: corrupt {name}-compressed file ({err})") from err
    return raw


def load_pca(path: str | Path) -> PCAState:
    """The PCA estimator pickled in ``path`` (``joblib.dump`` or ``pickle.dump``), read safely.

    Args:
        path: The ``pca.pkl`` file.

    Returns:
        Its attributes, e.g. ``mean_`` ``[D]`` and ``components_`` ``[d, D]`` (float64 arrays).

    Raises:
        FileNotFoundError: No such file.
        UnsafePickleError: The pickle names a global other than the PCA and numpy's.
        PCAFileError: Not a pickle, truncated, or not a PCA estimator.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such PCA file")
    stream = io.BytesIO(_decompressed(path.read_bytes(), path))
    try:
        obj = PCAUnpickler(stream, path).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError) as err:
        raise PCAFileError(f"{path}: not a readable pickled PCA ({err})") from err
    if not isinstance(obj, PCAState):
        raise PCAFileError(f"{path}: holds a {type(obj).__name__}, not a PCA estimator")
    for name in ("mean_", "components_"):
        if not isinstance(getattr(obj, name, None), np.ndarray):
            raise PCAFileError(f"{path}: the PCA has no array {name} (was it fitted?)")
    return obj


__all__ = ["PCAFileError", "PCAState", "PCAUnpickler", "UnsafePickleError", "load_pca"]
