"""PyTorch ``.pth`` files read without PyTorch and without running anything they hold.

``torch.save`` (PyTorch 1.6 and later) writes a zip: ``<name>/data.pkl`` pickles the object,
each tensor a call of ``torch._utils._rebuild_tensor_v2`` on a storage that a persistent id
names, and ``<name>/data/<key>`` holds each storage's raw little-endian bytes. A pickle can
call any importable function, so ``torch.load`` of a stranger's file can run code. Here
every global the pickle names passes ``find_class``, which answers only the few a state
dict needs (tensor and parameter rebuilds, the storage types, ``OrderedDict``; and
``argparse.Namespace``, the training arguments RETFound's checkpoints carry, as a plain
record) and refuses every other by name, before it is imported, let alone called.
"""

from __future__ import annotations

import collections
import pickle
import types
import zipfile
from pathlib import Path

import ml_dtypes
import numpy as np

from retina.errors import ConfigError

STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _StorageType:
    """What ``torch.<X>Storage`` stands for here: the dtype of the bytes."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    """``torch._utils._rebuild_tensor_v2``: a view of the storage, copied out."""
    itemsize = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=tuple(size), strides=tuple(s * itemsize for s in stride)
    )
    return np.array(view)


def _rebuild_parameter(data, requires_grad=False, hooks=None, *rest):
    return data


class ForeignRecord(types.SimpleNamespace):
    """A pickled ``argparse.Namespace``: its fields, nothing called."""


ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("argparse", "Namespace"): ForeignRecord,
    **{("torch", name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, archive: zipfile.ZipFile, prefix: str, path: Path):
        super().__init__(file)
        self.archive, self.prefix, self.path = archive, prefix, path

    def find_class(self, module: str, name: str):
        if (module, name) in ALLOWED:
            return ALLOWED[(module, name)]
        raise ConfigError(
            f"{self.path}: refused, before running anything: its pickle asks for "
            f"{module}.{name}, which a file of weights never needs (only tensor rebuilds, "
            "storage types and OrderedDict are read). If you trust the file, convert it on a "
            "machine with PyTorch: safetensors.torch.save_file(torch.load(path)['model'], "
            "'weights.safetensors'), and give that file."
        )

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid[0] == "storage" and len(pid) == 5):
            raise ConfigError(f"{self.path}: an unknown kind of stored object ({pid!r:.80}).")
        _, storage_type, key, _location, count = pid
        if not isinstance(storage_type, _StorageType):
            raise ConfigError(f"{self.path}: storage of an unknown type ({storage_type!r:.80}).")
        raw = self.archive.read(f"{self.prefix}/data/{key}")
        return np.frombuffer(raw, dtype=storage_type.dtype, count=count)  # little-endian


def load_torch_file(path: str | Path):
    """The object a ``torch.save`` zip holds, tensors as numpy arrays (bfloat16 as
    ``ml_dtypes.bfloat16``).

    Raises:
        ConfigError: naming the file, for a legacy (pre-1.6) or damaged file, or a pickle
            that asks for anything beyond tensors.
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        raise ConfigError(
            f"{path}: not a zip-format PyTorch file (saved by PyTorch before 1.6, or not a "
            "PyTorch file); re-save it with a newer PyTorch, or convert it to .safetensors."
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise ConfigError(f"{path}: a zip without the one data.pkl torch.save writes.")
        prefix = pickles[0].removesuffix("/data.pkl")
        byteorder = f"{prefix}/byteorder"
        if byteorder in archive.namelist() and archive.read(byteorder) != b"little":
            raise ConfigError(f"{path}: saved on a big-endian machine; convert it there.")
        with archive.open(pickles[0]) as file:
            try:
                return _RestrictedUnpickler(file, archive, prefix, path).load()
            except ConfigError:
                raise
            except Exception as error:
                raise ConfigError(
                    f"{path}: cannot read its pickle ({type(error).__name__}: {error})."
                ) from None
