"""The data sources and the shape/dtype checks of every batch against the model's inputs.

Batches are split, counted and sliced along each input's batch axis (``InputSpec.batch_axis``:
0 by default, None for 0-d inputs and ``--batch-axis NAME=none``, whose arrays go whole with
every batch); :func:`configure_inputs` applies ``--batch-axis`` and ``--shapes``.
"""

from __future__ import annotations

import importlib.util
import os
import zipfile
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trtcal.core.errors import TrtcalError

#: Batch size for models whose batch dimension is dynamic, unless --batch-size says otherwise.
DEFAULT_BATCH_SIZE = 32

Batch = dict[str, np.ndarray]

#: The most values one ``--shapes`` entry may ask for (16 GiB of float32).
MAX_SHAPE_VALUES = 2**32


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


def check_batch(batch: Batch, inputs: Sequence, where: str, *, finite: bool = False) -> Batch:
    """Check names, dtypes, ranks and fixed dimensions (the model's, and those ``--shapes`` fixed);
    convert float64 to the model's float type. ``finite``: refuse NaN/Inf in float inputs."""
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
                model = spec.model_shape or spec.shape
                who = "the model wants" if isinstance(model[axis], int) else "--shapes says"
                raise TrtcalError(f"{where}: input {spec.name!r} has shape {a.shape}, {who} "
                                  f"{_shape_text(spec.shape)} (axis {axis} must be {dim})")
        if finite and a.dtype.kind == "f":
            bad = ~np.isfinite(a)
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                raise TrtcalError(f"{where}: input {spec.name!r} holds {int(bad.sum())} NaN/Inf values (the first at "
                                  f"index {first}: {a[first]}); fix the data, or pass "
                                  "--allow-nonfinite to feed them anyway (they stay out of the ranges)")
        out[spec.name] = a if a.flags.c_contiguous else a.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
    extra = [k for k in batch if k not in out]
    if extra:
        raise TrtcalError(f"{where}: data for {', '.join(map(repr, extra))}, which the model has no input for")
    return out


def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + "]"


def _axis_text(spec) -> str:
    return "no batch axis" if spec.batch_axis is None else f"axis {spec.batch_axis}"


def samples_in(batch: Batch, inputs: Sequence) -> int:
    """Samples in ``batch``: the length of the first input's batch axis (inputs without one, such
    as 0-d scalars, do not count; 1 when no input has a batch axis)."""
    for spec in inputs:
        axis = spec.batch_axis
        a = batch.get(spec.name)
        if axis is not None and a is not None and np.ndim(a) > axis:
            return int(np.shape(a)[axis])
    return 1


def take(batch: Batch, inputs: Sequence, start: int, stop: int) -> Batch:
    """Samples ``start:stop`` of ``batch``, sliced along each input's batch axis; inputs without
    one (0-d scalars, ``--batch-axis NAME=none``) go as they are."""
    axes = {spec.name: spec.batch_axis for spec in inputs}
    out = {}
    for name, a in batch.items():
        axis = axes.get(name, 0)
        if axis is None or np.ndim(a) <= axis:
            out[name] = a
        else:
            out[name] = a[(slice(None),) * axis + (slice(start, stop),)]
    return out


def _count_samples(arrays: Batch, inputs: Sequence, source: str) -> int:
    """The common length of the inputs' batch axes; an error naming each when they differ."""
    lengths = {}
    for spec in inputs:
        a = arrays.get(spec.name)
        if spec.batch_axis is not None and a is not None and np.ndim(a) > spec.batch_axis:
            lengths[spec.name] = (int(np.shape(a)[spec.batch_axis]), spec.batch_axis)
    if len({n for n, _ in lengths.values()}) > 1:
        found = ", ".join(f"{name} {n} on axis {axis}" for name, (n, axis) in lengths.items())
        raise TrtcalError(f"{source}: inputs hold different numbers of samples along their batch axes ({found}); "
                          "name the axis that holds an input's samples with --batch-axis NAME=AXIS "
                          "(NAME=none: fed whole with every batch)")
    return next(iter(lengths.values()))[0] if lengths else 1


def _split(arrays: Batch, inputs: Sequence, batch_size: int, source: str
           ) -> tuple[int, Callable[[], Iterator[Batch]]]:
    n = _count_samples(arrays, inputs, source)
    if n == 0:
        raise TrtcalError(f"{source}: holds no samples")
    count = -(-n // batch_size)

    def gen() -> Iterator[Batch]:
        for start in range(0, n, batch_size):
            yield take(arrays, inputs, start, start + batch_size)

    return count, gen


def _names_text(inputs: Sequence) -> str:
    return ", ".join(spec.name for spec in inputs)


def _name_value(text: str, option: str, example: str) -> tuple[str, str]:
    """``NAME=VALUE`` (or ``NAME:VALUE``), split at the last ``=`` (else the last ``:``)."""
    sep = "=" if "=" in text else ":"
    name, found, value = str(text).rpartition(sep)
    if not found or not name or not value:
        raise TrtcalError(f"{option} {text!r}: expected NAME=VALUE, e.g. {option} {example}")
    return name, value


def parse_batch_axes(texts: Sequence[str] | None) -> dict[str, int | None]:
    """``--batch-axis NAME=AXIS`` (``AXIS`` a number, or ``none``) as ``{name: axis or None}``."""
    out: dict[str, int | None] = {}
    for text in texts or ():
        name, value = _name_value(text, "--batch-axis", "state=1")
        if value.strip().lower() == "none":
            axis = None
        else:
            try:
                axis = int(value)
            except ValueError:
                axis = -1
            if axis < 0:
                raise TrtcalError(f"--batch-axis {text!r}: the axis must be a number >= 0, or none")
        if name in out:
            raise TrtcalError(f"--batch-axis {text!r}: input {name!r} is given twice")
        out[name] = axis
    return out


def parse_input_shapes(texts: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """``--shapes NAME=DxDx...`` (e.g. ``x=1x3x48x320``; ``NAME:SHAPE`` too, as trtexec writes
    it) as ``{name: shape}``; every dimension a whole number >= 1."""
    out: dict[str, tuple[int, ...]] = {}
    for text in texts or ():
        name, value = _name_value(text, "--shapes", "x=1x3x48x320")
        try:
            dims = tuple(int(d) for d in value.lower().split("x"))
        except ValueError:
            dims = ()
        if not dims or min(dims) < 1:
            raise TrtcalError(f"--shapes {text!r}: dimensions must be whole numbers >= 1 joined by x, e.g. 1x3x48x320")
        if int(np.prod(dims, dtype=object)) > MAX_SHAPE_VALUES:
            raise TrtcalError(f"--shapes {text!r}: {int(np.prod(dims, dtype=object)):,} values a batch is too large "
                              f"(at most {MAX_SHAPE_VALUES:,})")
        if name in out:
            raise TrtcalError(f"--shapes {text!r}: input {name!r} is given twice")
        out[name] = dims
    return out


def configure_inputs(inputs: Sequence, *, batch_axes: dict | None = None, shapes: dict | None = None,
                     batch_size: int | None = None) -> tuple[list, int | None]:
    """The model's inputs with ``batch_axes`` (name -> axis, or None: fed whole with every batch)
    and ``shapes`` (name -> the shape of one batch, fixing dynamic dimensions) applied, and the
    batch size: ``batch_size``, else the batch-axis entry of ``shapes``, else None.

    Each name must be an input, each axis within its rank, each shape of its rank and equal to
    its fixed dimensions; ``shapes`` and ``batch_size`` must agree on the batch size.
    """
    from dataclasses import replace

    batch_axes, shapes = dict(batch_axes or {}), dict(shapes or {})
    by_name = {spec.name: spec for spec in inputs}
    for option, given in (("--batch-axis", batch_axes), ("--shapes", shapes)):
        unknown = [n for n in given if n not in by_name]
        if unknown:
            raise TrtcalError(f"{option} {unknown[0]}: the model has no input {unknown[0]!r} "
                              f"(its inputs: {_names_text(inputs)})")
    out, sizes = [], {}
    for spec in inputs:
        if spec.name in batch_axes:
            axis = batch_axes[spec.name]
            if not spec.shape and axis is not None:
                raise TrtcalError(f"--batch-axis {spec.name}={axis}: input {spec.name!r} is a scalar (0-d); it has "
                                  "no batch axis and goes as it is with every batch")
            if axis is not None and axis >= len(spec.shape):
                raise TrtcalError(f"--batch-axis {spec.name}={axis}: input {spec.name!r} has rank {len(spec.shape)} "
                                  f"{_shape_text(spec.shape)} (axes 0..{len(spec.shape) - 1})")
            spec = replace(spec, batch_axis=axis)
        if spec.name in shapes:
            dims = shapes[spec.name]
            text = "x".join(map(str, dims))
            if len(dims) != len(spec.shape):
                raise TrtcalError(f"--shapes {spec.name}={text}: input {spec.name!r} has rank {len(spec.shape)} "
                                  f"{_shape_text(spec.shape)}, not {len(dims)}")
            for axis, (dim, want) in enumerate(zip(dims, spec.shape)):
                if isinstance(want, int) and want > 0 and dim != want:
                    raise TrtcalError(f"--shapes {spec.name}={text}: the model fixes axis {axis} of {spec.name!r} "
                                      f"to {want} {_shape_text(spec.shape)}")
            shape = tuple(d if axis == spec.batch_axis else dim
                          for axis, (dim, d) in enumerate(zip(dims, spec.shape)))
            if spec.batch_axis is not None:
                sizes[spec.name] = dims[spec.batch_axis]
            spec = replace(spec, shape=shape, model_shape=spec.model_shape or spec.shape)
        out.append(spec)
    if len(set(sizes.values())) > 1:
        raise TrtcalError(f"--shapes: the batch axes disagree on the batch size ({sizes})")
    if sizes:
        implied = next(iter(sizes.values()))
        if batch_size is not None and batch_size != implied:
            name = next(iter(sizes))
            raise TrtcalError(f"--batch-size {batch_size}: --shapes {name}=... says batches of {implied}; "
                              "give one of the two, or the same size in both")
        batch_size = implied
    return out, batch_size


def is_loader_script(spec) -> bool:
    """Whether ``spec`` names a data-loader script (``file.py:function``), not a file or folder."""
    text = str(spec)
    return ".py:" in text and not Path(text).exists()


def open_data(spec: str | os.PathLike, inputs: Sequence, *, batch_size: int | None = None,
              preprocess=None, ignore: Collection[str] = ()) -> DataSource:
    """Open a data source for a model with ``inputs`` (a list of :class:`~trtcal.ort.runner.InputSpec`).

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
        count, gen = _split(batch, inputs, bs, str(path))
        return DataSource(f"{path} ({_batches_text(_count_samples(batch, inputs, str(path)), bs)})", gen, count)
    if path.suffix == ".npz":
        batch = _as_batch(path, inputs, _load_npz(path), ignore)
        count, gen = _split(batch, inputs, bs, str(path))
        return DataSource(f"{path} ({_batches_text(_count_samples(batch, inputs, str(path)), bs)})", gen, count)
    raise TrtcalError(f"{path}: unknown data file type; expected .npy, .npz, a folder, or script.py:function")


def _batches_text(n: int, batch_size: int) -> str:
    """``12 samples in 1 batch``, ``100 samples in 4 batches of 32 (the last of 4)``."""
    count = -(-n // batch_size)
    text = f"{n} sample{'s' * (n != 1)} in {count} batch{'es' * (count != 1)}"
    if count > 1:
        text += f" of {batch_size}" + (f" (the last of {n % batch_size})" if n % batch_size else "")
    return text


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
            n = _count_samples(batch, inputs, str(p))
            if n <= batch_size:
                yield batch
                continue
            for start in range(0, n, batch_size):  # a file larger than a batch is split along the batch axes
                yield take(batch, inputs, start, start + batch_size)

    return DataSource(f"{path}/ ({len(arrays)} batch files, at most {batch_size} samples a batch)", gen,
                      _count_batches(arrays, batch_size, inputs[0].batch_axis) if len(inputs) == 1 else None)


def _count_batches(files: list[Path], batch_size: int, axis: int | None = 0) -> int | None:
    """Batches a folder of .npy files for a one-input model gives (read from their headers, the
    samples on ``axis``), or None when unknown."""
    total = 0
    for p in files:
        if p.suffix != ".npy":
            return None
        try:
            shape = np.load(p, mmap_mode="r", allow_pickle=False).shape
        except Exception:  # a malformed file fails later, with its own message
            return None
        total += max(1, -(-shape[axis] // batch_size)) if axis is not None and len(shape) > axis else 1
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
    and type ids, where a cast of [-1, 1] would give all zeros). Each input's batch axis has
    ``batch_size`` samples; 0-d inputs are 0-d; other dynamic dimensions are 1 (the description
    says so) unless ``--shapes`` fixed them (see :func:`configure_inputs`)."""
    bs = batch_size or _default_batch(inputs)
    shapes, unset = {}, []
    for spec in inputs:
        shape = []
        for axis, d in enumerate(spec.shape):
            if axis == spec.batch_axis:
                shape.append(bs)
            elif isinstance(d, int) and d > 0:
                shape.append(d)
            else:
                shape.append(1)
                unset.append(f"{spec.name} axis {axis}")
        shapes[spec.name] = tuple(shape)

    def gen() -> Iterator[Batch]:
        rng = np.random.default_rng(seed)
        for _ in range(num_batches):
            batch = {}
            for spec in inputs:
                shape = shapes[spec.name]
                if np.dtype(spec.dtype).kind in "iub":
                    batch[spec.name] = np.asarray(rng.integers(0, 2, shape)).astype(spec.dtype)
                else:
                    batch[spec.name] = np.asarray(rng.uniform(-1, 1, shape)).astype(spec.dtype)
            yield batch

    note = f"; dynamic {', '.join(unset)} set to 1 (--shapes sets them)" if unset else ""
    return DataSource(f"random data ({num_batches} batches of {bs}, seed {seed}{note})", gen, num_batches, fake=True)


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
