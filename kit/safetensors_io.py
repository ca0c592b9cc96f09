"""safetensors files read and written a piece at a time, so that memory never holds a shard.

``safe_open`` maps a whole file, and every page a read touches stays in the process's resident set
until the file is closed: reading a 5 GB shard through it costs 5 GB of RSS however little of it is
kept. Here a tensor, or a band of its rows, is read with plain file reads into a buffer of its own
(the page cache keeps the file, outside the process), and a file is written with its header first
and then tensor by tensor, each in as many pieces as the caller likes. Peak memory is one piece
(``CHUNK_BYTES``), whatever the shard's size.

``load_model`` builds on it: a checkpoint loaded straight into the device's memory, piece by piece,
with no host copy of the model on a GPU.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Iterator

import torch

CHUNK_BYTES = 64 * 2**20  # one piece of a tensor read or written at a time

DTYPES = {
    "BOOL": torch.bool,
    "U8": torch.uint8,
    "I8": torch.int8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "F32": torch.float32,
    "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
for _name in ("U16", "U32", "U64"):  # unsigned wider types: torch ≥ 2.3
    if hasattr(torch, "uint" + _name[1:]):
        DTYPES[_name] = getattr(torch, "uint" + _name[1:])
NAMES = {dtype: name for name, dtype in DTYPES.items()}


class Entry:
    """One tensor of a file: dtype, shape and where its bytes lie (absolute offsets)."""

    __slots__ = ("dtype", "shape", "begin", "end")

    def __init__(self, dtype: torch.dtype, shape: tuple[int, ...], begin: int, end: int):
        self.dtype, self.shape, self.begin, self.end = dtype, shape, begin, end

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def rows(self) -> int:
        """Length of the first dimension (1 for a scalar): what a tensor is read by."""
        return self.shape[0] if self.shape else 1

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize


def row_bands(rows: int, row_bytes: int, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, int]]:
    """(start, stop) bands of rows, each at most ``chunk_bytes`` (one row where a row is larger)."""
    step = max(1, chunk_bytes // max(row_bytes, 1))
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


class SafetensorsFile:
    """A safetensors file's header, and its tensors read in full or by bands of rows."""

    def __init__(self, path: Path):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        self.metadata = header.pop("__metadata__", None) or {}
        start = 8 + length
        self.entries = {
            name: Entry(
                DTYPES[e["dtype"]], tuple(e["shape"]), start + e["data_offsets"][0], start + e["data_offsets"][1]
            )
            for name, e in header.items()
        }
        self._file = None

    def names(self) -> list[str]:
        """Tensor names in the order their bytes lie in the file."""
        return sorted(self.entries, key=lambda n: self.entries[n].begin)

    def read(self, name: str, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        """Rows ``start:stop`` of a tensor (all of it by default), in its stored dtype, on the CPU."""
        e = self.entries[name]
        start, stop = start or 0, e.rows if stop is None else stop
        shape = (stop - start, *e.shape[1:]) if e.shape else ()
        out = torch.empty(shape, dtype=e.dtype)
        self._read_into(out, e.begin + start * e.row_bytes)
        return out

    def bands(self, name: str, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, int]]:
        e = self.entries[name]
        return row_bands(e.rows, e.row_bytes, chunk_bytes)

    def _read_into(self, out: torch.Tensor, offset: int) -> None:
        if self._file is None:
            self._file = open(self.path, "rb", buffering=0)
        view = memoryview(out.reshape(-1).view(torch.uint8).numpy())
        self._file.seek(offset)
        done = 0
        while done < len(view):
            n = self._file.readinto(view[done:])
            if not n:
                raise EOFError(f"{self.path}: truncated at byte {offset + done}")
            done += n

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SafetensorsWriter:
    """A safetensors file written header first, then each tensor in order, piece by piece:
    ``write`` takes the next piece (whole rows, or any run of the flattened bytes) of the tensor
    being written; the sizes must add up, or ``close`` raises."""

    def __init__(self, path: Path, specs: list[tuple[str, torch.dtype, tuple[int, ...]]], metadata: dict | None = None):
        self.path, self.specs = Path(path), list(specs)
        header, offset = {}, 0
        if metadata:
            header["__metadata__"] = metadata
        self._sizes = []
        for name, dtype, shape in self.specs:
            size = math.prod(shape) * dtype.itemsize
            header[name] = {"dtype": NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            self._sizes.append(size)
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-(8 + len(raw)) % 8)  # the data starts 8-byte aligned, as safetensors writes it
        self._file = open(self.path, "wb")
        self._file.write(struct.pack("<Q", len(raw)) + raw)
        self._index, self._written = 0, 0

    def write(self, piece: torch.Tensor) -> None:
        while self._index < len(self.specs) and self._written == self._sizes[self._index]:
            self._index, self._written = self._index + 1, 0
        name, dtype, _ = self.specs[self._index]
        if piece.dtype != dtype:
            raise TypeError(f"{name}: a {piece.dtype} piece for a {dtype} tensor")
        data = piece.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
        if self._written + len(data) > self._sizes[self._index]:
            raise ValueError(f"{name}: more bytes than its shape holds")
        self._file.write(memoryview(data))
        self._written += len(data)

    def close(self) -> None:
        if self._file is None:
            return
        written = sum(self._sizes[: self._index]) + self._written
        self._file.close()
        self._file = None
        if written != sum(self._sizes):
            raise ValueError(f"{self.path}: {written} of {sum(self._sizes)} tensor bytes written")

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc):
        if kind is None:
            self.close()
        elif self._file is not None:
            self._file.close()


def copy_tensor(
    source: SafetensorsFile,
    name: str,
    writer: SafetensorsWriter,
    dtype: torch.dtype | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> None:
    """A tensor from ``source`` into the writer, band by band, cast to ``dtype`` where given."""
    for start, stop in source.bands(name, chunk_bytes):
        piece = source.read(name, start, stop)
        writer.write(piece if dtype is None else piece.to(dtype))


def tensor_files(directory: Path) -> dict[str, Path]:
    """Tensor name → the safetensors file holding it (one file, or shards with an index)."""
    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {name: directory / file for name, file in weight_map.items()}
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{directory}: no .safetensors weights")
    return {name: file for file in files for name in SafetensorsFile(file).entries}


def names_by_file(files: dict[str, Path]) -> dict[Path, list[str]]:
    """``tensor_files`` turned around: each file with the tensor names it holds, files in order."""
    out: dict[Path, list[str]] = {}
    for name, file in files.items():
        out.setdefault(file, []).append(name)
    return dict(sorted(out.items()))


def parameter_count(directory: Path) -> int:
    """Parameters in a checkpoint, from the safetensors headers (nothing loaded)."""
    total = 0
    for file, names in names_by_file(tensor_files(directory)).items():
        entries = SafetensorsFile(file).entries
        total += sum(entries[name].numel for name in names)
    return total


def stated_dtype(config: dict) -> str:
    """The dtype a config says its checkpoint is stored in (float32 when it says none, as transformers reads it)."""
    return dtype_name(config.get("dtype") or config.get("torch_dtype") or "float32")


def converted_dtype(stored: torch.dtype, dtype: torch.dtype, whole_float32: bool) -> torch.dtype:
    """The dtype a stored tensor takes when the checkpoint is written or loaded in ``dtype``: floating
    tensors become ``dtype``, except float32 ones in a 16-bit checkpoint (a model may keep some in
    float32 on purpose: transformers' _keep_in_fp32_modules); integer tensors stay as they are."""
    keep = not stored.is_floating_point or (stored == torch.float32 and not whole_float32)
    return stored if keep else dtype


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def load_model(directory: Path, dtype: torch.dtype, device: str):
    """A causal LM from a local, unquantized safetensors checkpoint, its weights read band by band
    straight into tensors on ``device`` (16-bit and float32-in-a-float32-checkpoint tensors cast to
    ``dtype``; float32 tensors of a 16-bit checkpoint kept), then handed to transformers as the
    model's state dict (``from_pretrained(None, state_dict=...)``: transformers adopts the tensors,
    renames and converts as for its own loads, ties, builds the buffers). On a GPU the host holds one
    band at a time, never the model; transformers' own loader maps every shard, and each page it
    touches counts in the process's RSS until the load ends.

    Returns None where this route does not apply (no safetensors, a quantized or remote-code
    checkpoint, a config transformers has no causal LM class for) or gains nothing: into CPU memory
    with nothing to cast, transformers' tensors are views of the mapped files, with no copy at all.
    Raises where the checkpoint's tensors do not make the model (missing, unexpected or mismatched
    weights)."""
    from transformers import AutoConfig, GenerationConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    directory = Path(directory)
    raw_config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    if raw_config.get("quantization_config") or raw_config.get("auto_map"):
        return None
    try:
        files = tensor_files(directory)
    except FileNotFoundError:
        return None
    config = AutoConfig.from_pretrained(str(directory))
    model_class = MODEL_FOR_CAUSAL_LM_MAPPING.get(type(config), None)
    if model_class is None:
        return None
    whole_float32 = stated_dtype(raw_config) == "float32"
    by_file = {SafetensorsFile(file): names for file, names in names_by_file(files).items()}

    def load_as(e: Entry) -> torch.dtype:
        return converted_dtype(e.dtype, dtype, whole_float32)

    if device == "cpu" and all(load_as(f.entries[n]) == f.entries[n].dtype for f, ns in by_file.items() for n in ns):
        return None  # nothing to cast: transformers' tensors are views of the mapped files, no copy at all
    state_dict = {}
    for source, names in by_file.items():
        with source:
            for name in sorted(names, key=lambda n: source.entries[n].begin):
                e = source.entries[name]
                out = torch.empty(e.shape, dtype=load_as(e), device=device)
                flat, per_row = out.view(-1), math.prod(e.shape[1:])
                for start, stop in source.bands(name):
                    flat[start * per_row : stop * per_row].copy_(source.read(name, start, stop).reshape(-1))
                state_dict[name] = out
    model, info = model_class.from_pretrained(
        None, config=config, state_dict=state_dict, dtype=dtype, device_map=device, output_loading_info=True
    )
    del state_dict
    wrong = {
        k: sorted(map(str, v))[:3]
        for k, v in info.items()
        if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v
    }
    if wrong:
        raise ValueError(f"{directory}: the checkpoint's tensors do not fit {model_class.__name__}: {wrong}")
    if (directory / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(str(directory))
    model.eval()
    return model
