"""The data sources and the shape/dtype checks of every batch against the model's inputs."""

from __future__ import annotations

import importlib.util
import os
import zipfile
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trtcal.errors import TrtcalError

#: Batch size for models whose batch dimension is dynamic, unless --batch-size says otherwise.
DEFAULT_BATCH_SIZE = 32

Batch = dict[str, np.ndarray]


@dataclass
class DataSource:
    """An iterable of batches with a description and (when known) the number of batches."""

    description: str
    batches: Callable[[], Iterator[Batch]]
    num_batches: int | None = None
    fake: bool = False  # random data: the result must say so

    def __iter__(self) -> Iterator[Batch]:
        return self.batches()


def _magic(path: Path, magic: bytes, kind: str) -> None:
    with open(path, "rb") as fh:
        if fh.read(len(magic)) != magic:
            raise TrtcalError(f"{path}: not a valid {kind} file (wrong magic bytes)")


def _load_npy(path: Path) -> np.ndarray:
    _magic(path, b"\x93NUMPY", ".npy")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise TrtcalError(f"{path}: cannot read as .npy without pickles ({exc})") from None
    except (OSError, EOFError) as exc:
        raise TrtcalError(f"{path}: not a valid .npy file ({exc})") from None


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    _magic(path, b"PK", ".npz")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        raise TrtcalError(f"{path}: cannot read as .npz without pickles ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise TrtcalError(f"{path}: not a valid .npz file ({exc})") from None


def _as_batch(path: Path, inputs: Sequence, arrays: dict[str, np.ndarray] | np.ndarray,
              ignore: Collection[str] = ()) -> Batch:
    names = [i.name for i in inputs]
    if isinstance(arrays, dict) and ignore:
        arrays = {k: a for k, a in arrays.items() if k not in ignore or k in names}
    if isinstance(arrays, np.ndarray):
        if len(names) != 1:
            raise TrtcalError(f"{path}: one array, but the model has {len(names)} inputs ({', '.join(names)}); "
                              "use a .npz with one array per input name")
        return {names[0]: arrays}
    missing = [n for n in names if n not in arrays]
    extra = [k for k in arrays if k not in names]
    if missing:
        hint = f" (it has {', '.join(extra)})" if extra else ""
        raise TrtcalError(f"{path}: no array for model input(s) {', '.join(missing)}{hint}")
    if extra:
        raise TrtcalError(f"{path}: array(s) {', '.join(extra)} match no model input ({', '.join(names)})")
    return {n: arrays[n] for n in names}


def check_batch(batch: Batch, inputs: Sequence, where: str) -> Batch:
    """Check names, dtypes, ranks and fixed dimensions; convert float64 to the model's float type."""
    out = {}
    for spec in inputs:
        if spec.name not in batch:
            raise TrtcalError(f"{where}: no data for model input {spec.name!r}")
        a = np.asarray(batch[spec.name])
        want = np.dtype(spec.dtype)
        if a.dtype != want:
            if a.dtype.kind == want.kind == "f" or (a.dtype.kind in "iu" and want.kind in "iu"):
                a = a.astype(want)
            else:
                raise TrtcalError(f"{where}: input {spec.name!r} is {a.dtype}, the model wants {want}")
        if a.ndim != len(spec.shape):
            raise TrtcalError(f"{where}: input {spec.name!r} has shape {a.shape}, the model wants rank "
                              f"{len(spec.shape)} {_shape_text(spec.shape)}")
        for axis, (got, dim) in enumerate(zip(a.shape, spec.shape)):
            if isinstance(dim, int) and dim > 0 and got != dim:
                raise TrtcalError(f"{where}: input {spec.name!r} has shape {a.shape}, the model wants "
                                  f"{_shape_text(spec.shape)} (axis {axis} must be {dim})")
        out[spec.name] = np.ascontiguousarray(a)
    extra = [k for k in batch if k not in out]
    if extra:
        raise TrtcalError(f"{where}: data for {', '.join(map(repr, extra))}, which the model has no input for")
    return out


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + "]"


def _split(arrays: Batch, batch_size: int, source: str) -> tuple[int, Callable[[], Iterator[Batch]]]:
    lengths = {n: a.shape[0] if a.ndim else 0 for n, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise TrtcalError(f"{source}: arrays hold different numbers of samples along axis 0: {lengths}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise TrtcalError(f"{source}: holds no samples")
    count = -(-n // batch_size)

    def gen() -> Iterator[Batch]:
        for start in range(0, n, batch_size):
            yield {k: a[start:start + batch_size] for k, a in arrays.items()}

    return count, gen


def is_loader_script(spec) -> bool:
    """Whether ``spec`` names a data-loader script (``file.py:function``), not a file or folder."""
    text = str(spec)
    return ".py:" in text and not Path(text).exists()


def open_data(spec: str | os.PathLike, inputs: Sequence, *, batch_size: int | None = None,
              preprocess=None, ignore: Collection[str] = ()) -> DataSource:
    """Open a data source for a model with ``inputs`` (a list of :class:`~trtcal.runner.InputSpec`).

    ``ignore``: names of arrays in ``.npz`` files that are not model inputs and are left out (for
    example the labels stored beside the images).
    """
    text = str(spec)
    if batch_size is not None and batch_size < 1:
        raise TrtcalError(f"--batch-size {batch_size}: must be at least 1")
    if is_loader_script(text):
        return _script_source(text, inputs)
    path = Path(text)
    if not path.exists():
        raise TrtcalError(f"{path}: no such data file or folder")
    bs = batch_size or _default_batch(inputs)
    if path.is_dir():
        return _folder_source(path, inputs, bs, preprocess, ignore)
    if path.suffix == ".npy":
        batch = _as_batch(path, inputs, _load_npy(path))
        count, gen = _split(batch, bs, str(path))
        return DataSource(f"{path} ({count} batches of {bs})", gen, count)
    if path.suffix == ".npz":
        batch = _as_batch(path, inputs, _load_npz(path), ignore)
        count, gen = _split(batch, bs, str(path))
        return DataSource(f"{path} ({count} batches of {bs})", gen, count)
    raise TrtcalError(f"{path}: unknown data file type; expected .npy, .npz, a folder, or script.py:function")


def _default_batch(inputs: Sequence) -> int:
    fixed = {i.fixed_batch for i in inputs} - {None}
    return fixed.pop() if len(fixed) == 1 else DEFAULT_BATCH_SIZE


def _folder_source(path: Path, inputs: Sequence, batch_size: int, preprocess,
                   ignore: Collection[str] = ()) -> DataSource:
    from trtcal.data import images

    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    arrays = [p for p in files if p.suffix in (".npy", ".npz")]
    pictures = [p for p in files if p.suffix.lower() in images.IMAGE_SUFFIXES]
    if arrays and pictures:
        raise TrtcalError(f"{path}: mixes array files and images; keep one kind per folder")
    if pictures:
        return images.image_source(path, pictures, inputs, batch_size, preprocess)
    if not arrays:
        raise TrtcalError(f"{path}: empty data folder (no .npy, .npz or image files)")

    def gen() -> Iterator[Batch]:
        for p in arrays:
            batch = _as_batch(p, inputs, _load_npy(p) if p.suffix == ".npy" else _load_npz(p), ignore)
            n = min((a.shape[0] for a in batch.values() if a.ndim), default=0)
            if n <= batch_size:
                yield batch
                continue
            for start in range(0, n, batch_size):  # a file larger than a batch is split along axis 0
                yield {k: a[start:start + batch_size] for k, a in batch.items()}

    return DataSource(f"{path}/ ({len(arrays)} batch files, at most {batch_size} samples a batch)", gen,
                      _count_batches(arrays, batch_size))


def _count_batches(files: list[Path], batch_size: int) -> int | None:
    """Batches a folder of .npy files gives (read from their headers), or None when unknown."""
    total = 0
    for p in files:
        if p.suffix != ".npy":
            return None
        try:
            shape = np.load(p, mmap_mode="r", allow_pickle=False).shape
        except Exception:  # a malformed file fails later, with its own message
            return None
        total += max(1, -(-shape[0] // batch_size)) if shape else 1
    return total


def _script_source(text: str, inputs: Sequence) -> DataSource:
    file, _, func_name = text.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise TrtcalError(f"{path}: no such data-loader script")
    spec = importlib.util.spec_from_file_location(f"trtcal_data_loader_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise TrtcalError(f"{path}: the data-loader script failed on import: {type(exc).__name__}: {exc}") from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise TrtcalError(f"{path}: has no function {func_name!r}")

    def gen() -> Iterator[Batch]:
        try:
            produced: Iterable = func()
            for i, batch in enumerate(produced):
                if not isinstance(batch, dict):
                    raise TrtcalError(f"{text}: batch {i} is a {type(batch).__name__}, expected a dict of arrays")
                yield batch
        except TrtcalError:
            raise
        except Exception as exc:
            raise TrtcalError(f"{text}: the data loader failed: {type(exc).__name__}: {exc}") from None

    return DataSource(f"{text} (data-loader script)", gen, None)


def random_data(inputs: Sequence, *, batch_size: int | None = None, num_batches: int = 8,
                seed: int = 0) -> DataSource:
    """Random batches, only for smoke tests (the result is marked as fake): float inputs uniform
    in [-1, 1]; integer and boolean inputs 0 or 1 at random (valid as token ids, attention masks
    and type ids, where a cast of [-1, 1] would give all zeros)."""
    bs = batch_size or _default_batch(inputs)

    def gen() -> Iterator[Batch]:
        rng = np.random.default_rng(seed)
        for _ in range(num_batches):
            batch = {}
            for spec in inputs:
                shape = [bs] + [d if isinstance(d, int) and d > 0 else 1 for d in spec.shape[1:]]
                if np.dtype(spec.dtype).kind in "iub":
                    batch[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
                else:
                    batch[spec.name] = rng.uniform(-1, 1, shape).astype(spec.dtype)
            yield batch

    return DataSource(f"random data ({num_batches} batches of {bs}, seed {seed})", gen, num_batches, fake=True)


def load_labels(spec: str | os.PathLike) -> np.ndarray:
    """Integer class labels from ``FILE.npy``, ``FILE.txt`` (one per line) or ``FILE.npz[:KEY]``
    (``KEY`` defaults to ``labels``), as a 1-D int64 array."""
    text = str(spec)
    key = "labels"
    if ".npz:" in text and not Path(text).exists():
        text, _, key = text.rpartition(":")
    path = Path(text)
    if not path.is_file():
        raise TrtcalError(f"{path}: no such labels file")
    if path.suffix == ".npy":
        labels = _load_npy(path)
    elif path.suffix == ".npz":
        arrays = _load_npz(path)
        if key not in arrays:
            raise TrtcalError(f"{path}: no array {key!r} (it has {', '.join(arrays) or 'none'}); name it as {path}:KEY")
        labels = arrays[key]
    else:
        lines = [(i + 1, line.strip()) for i, line in enumerate(path.read_text(errors="replace").splitlines())]
        values = []
        for number, line in lines:
            if not line:
                continue
            try:
                values.append(int(line))
            except ValueError:
                raise TrtcalError(f"{path}:{number}: not an integer class label: {line[:40]!r}") from None
        labels = np.array(values, dtype=np.int64)
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise TrtcalError(f"{path}: labels must be a 1-D integer array, not {labels.dtype} of shape {labels.shape}")
    return labels.astype(np.int64)
