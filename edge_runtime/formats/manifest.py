"""The segment manifest: how a DNN cut into ONNX segments is described on disk.

An export directory holds one ONNX file per segment plus ``manifest.json``. The export side
(models/) writes it through `Manifest.write`; the torch-free runtime, the profiler and the
simulator read it through `Manifest.load`. This module is the single definition of the format.

Indexing (matches the paper's partition point, SYSTEM_MODEL.md "DNN partitioning"):

    segments 0 .. n-1        the model, in execution order (the paper's "layers", L_k = n)
    cut c, 0 <= c <= n       segments [0, c) run on the vehicle, [c, n) on the edge node
    cut 0                    full offload: the raw input is sent (paper's phi = 1)
    cut n                    fully local: nothing is sent (paper's phi = L_k + 1), bytes = 0

``cuts[c].bytes`` is eq (3)'s D_phi with phi = c + 1: the size of the tensor that crosses the
cut, in bytes (rho = itemsize of the dtype). ``flops_before`` / ``flops_after`` are the sums of
the segments' eq (6) FLOPs on either side of the cut.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from splitrt.edge_runtime.errors import ManifestError

FORMAT_VERSION = 1
MANIFEST_FILE = "manifest.json"

#: dtypes a cut tensor may have (names as numpy spells them).
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")


def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (segments can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def canonical_json(obj: Any) -> bytes:
    """The bytes a manifest or record is hashed over: sorted keys, no whitespace."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor of static shape. ``bytes`` is prod(shape) * itemsize."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ManifestError(f"tensor {self.name!r}: unsupported dtype {self.dtype!r} (one of {DTYPES})")
        if any((not isinstance(d, int)) or d <= 0 for d in self.shape):
            raise ManifestError(f"tensor {self.name!r}: shape {list(self.shape)} must be positive integers")

    @property
    def bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class Cut:
    """One partition point (see module docstring for the indexing)."""

    index: int
    tensor: str
    shape: tuple[int, ...]
    dtype: str
    bytes: int
    flops_before: int
    flops_after: int


@dataclass(frozen=True)
class Segment:
    """One ONNX file: runs the model from cut ``index`` to cut ``index + 1``."""

    index: int
    file: str
    sha256: str
    flops: int
    input: str
    output: str
    ops: tuple[str, ...] = ()
    label: str = ""


@dataclass(frozen=True)
class Manifest:
    """A loaded, validated manifest. ``directory`` is where its segment files are."""

    model: str
    source: dict[str, Any]
    granularity: str
    input: TensorSpec
    output: TensorSpec
    cuts: tuple[Cut, ...]
    segments: tuple[Segment, ...]
    whole: dict[str, str] | None = None
    opset: int | None = None
    format_version: int = FORMAT_VERSION
    directory: Path = field(default=Path("."), compare=False)

    def __post_init__(self) -> None:
        self._validate()

    # ---- derived quantities -------------------------------------------------------------
    @property
    def n_segments(self) -> int:
        return len(self.segments)

    @property
    def n_cuts(self) -> int:
        """Number of partition choices, L_k + 1 in the paper."""
        return len(self.cuts)

    @property
    def total_flops(self) -> int:
        return sum(s.flops for s in self.segments)

    @functools.cached_property
    def digest(self) -> str:
        """sha256 of the canonical manifest JSON: ties profiles, wire messages and policies to it.

        Cached: hashing the canonical JSON costs ~1 ms, and the runtime stamps every message with it.
        """
        return hashlib.sha256(canonical_json(self.to_dict())).hexdigest()

    def cut_bytes(self) -> np.ndarray:
        """Eq (3) for every cut as an int64 array of length n_cuts (last entry 0: nothing sent)."""
        return np.array([c.bytes for c in self.cuts], dtype=np.int64)

    def flops_before(self) -> np.ndarray:
        return np.array([c.flops_before for c in self.cuts], dtype=np.int64)

    def flops_after(self) -> np.ndarray:
        return np.array([c.flops_after for c in self.cuts], dtype=np.int64)

    def cut_spec(self, cut: int) -> TensorSpec:
        """The tensor that crosses ``cut`` (the model output for the fully-local cut)."""
        c = self.cuts[cut]
        return TensorSpec(c.tensor, c.shape, c.dtype)

    def segment_path(self, index: int) -> Path:
        return self.directory / self.segments[index].file

    def verify_segment(self, index: int) -> Path:
        """Path of segment ``index`` after checking that it exists and its sha256 matches."""
        seg = self.segments[index]
        path = self.directory / seg.file
        if not path.is_file():
            raise ManifestError(f"segment {index} of {self.model}: file {path} is missing")
        actual = sha256_file(path)
        if actual != seg.sha256:
            raise ManifestError(
                f"segment {index} of {self.model}: {path} has sha256 {actual[:16]}..., "
                f"manifest expects {seg.sha256[:16]}... (file tampered with or from another export)"
            )
        return path

    def whole_path(self) -> Path | None:
        """Path of the unsplit model, if the export kept one (checked like a segment)."""
        if not self.whole:
            return None
        path = self.directory / self.whole["file"]
        if not path.is_file():
            raise ManifestError(f"whole model of {self.model}: file {path} is missing")
        if sha256_file(path) != self.whole["sha256"]:
            raise ManifestError(f"whole model of {self.model}: {path} does not match its sha256")
        return path

    # ---- (de)serialisation --------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def spec(t: TensorSpec) -> dict[str, Any]:
            return {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}

        out: dict[str, Any] = {
            "format_version": self.format_version,
            "model": self.model,
            "source": self.source,
            "granularity": self.granularity,
            "opset": self.opset,
            "input": spec(self.input),
            "output": spec(self.output),
            "cuts": [{**asdict(c), "shape": list(c.shape)} for c in self.cuts],
            "segments": [{**asdict(s), "ops": list(s.ops)} for s in self.segments],
        }
        if self.whole:
            out["whole"] = dict(self.whole)
        return out

    def write(self, directory: str | Path) -> Path:
        """Write ``manifest.json`` into ``directory`` (stable key order, so exports are diffable)."""
        path = Path(directory) / MANIFEST_FILE
        path.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], directory: str | Path = ".") -> Manifest:
        where = f"manifest in {directory}"
        if not isinstance(data, dict):
            raise ManifestError(f"{where}: top level must be a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestError(
                f"{where}: format_version {version!r} is not supported (this splitrt reads {FORMAT_VERSION})"
            )
        missing = [k for k in ("model", "source", "input", "output", "cuts", "segments") if k not in data]
        if missing:
            raise ManifestError(f"{where}: missing field(s) {', '.join(missing)}")
        try:
            return cls(
                model=str(data["model"]),
                source=dict(data["source"]),
                granularity=str(data.get("granularity", "layer")),
                input=_spec(data["input"]),
                output=_spec(data["output"]),
                cuts=tuple(
                    Cut(
                        index=int(c["index"]),
                        tensor=str(c["tensor"]),
                        shape=tuple(int(d) for d in c["shape"]),
                        dtype=str(c["dtype"]),
                        bytes=int(c["bytes"]),
                        flops_before=int(c["flops_before"]),
                        flops_after=int(c["flops_after"]),
                    )
                    for c in data["cuts"]
                ),
                segments=tuple(
                    Segment(
                        index=int(s["index"]),
                        file=str(s["file"]),
                        sha256=str(s["sha256"]),
                        flops=int(s["flops"]),
                        input=str(s["input"]),
                        output=str(s["output"]),
                        ops=tuple(str(o) for o in s.get("ops", ())),
                        label=str(s.get("label", "")),
                    )
                    for s in data["segments"]
                ),
                whole=dict(data["whole"]) if data.get("whole") else None,
                opset=int(data["opset"]) if data.get("opset") is not None else None,
                format_version=FORMAT_VERSION,
                directory=Path(directory),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{where}: malformed entry ({type(exc).__name__}: {exc})") from None

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Load ``DIR/manifest.json`` (``path`` may be the directory or the file itself)."""
        path = Path(path)
        file = path / MANIFEST_FILE if path.is_dir() else path
        if not file.is_file():
            raise ManifestError(f"no manifest at {file} (run `splitrt export` first?)")
        try:
            data = json.loads(file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ManifestError(f"cannot read manifest {file}: {exc}") from None
        return cls.from_dict(data, file.parent)

    # ---- validation ---------------------------------------------------------------------
    def _validate(self) -> None:
        where = f"manifest of {self.model!r}"
        n = len(self.segments)
        if n == 0:
            raise ManifestError(f"{where}: no segments")
        if len(self.cuts) != n + 1:
            raise ManifestError(f"{where}: {len(self.cuts)} cuts for {n} segments (expected {n + 1})")
        for i, cut in enumerate(self.cuts):
            if cut.index != i:
                raise ManifestError(f"{where}: cut at position {i} has index {cut.index}")
            TensorSpec(cut.tensor, cut.shape, cut.dtype)  # validates shape and dtype
            if min(cut.bytes, cut.flops_before, cut.flops_after) < 0:
                raise ManifestError(f"{where}: cut {i} has a negative bytes/FLOPs field")
        for i, seg in enumerate(self.segments):
            if seg.index != i:
                raise ManifestError(f"{where}: segment at position {i} has index {seg.index}")
            if seg.input != self.cuts[i].tensor or seg.output != self.cuts[i + 1].tensor:
                raise ManifestError(
                    f"{where}: segment {i} maps {seg.input!r} -> {seg.output!r}, but cuts {i} and {i + 1} "
                    f"carry {self.cuts[i].tensor!r} and {self.cuts[i + 1].tensor!r}"
                )
            if Path(seg.file).name != seg.file:
                raise ManifestError(f"{where}: segment {i} file {seg.file!r} must be a plain file name")
        if self.cuts[0].tensor != self.input.name:
            raise ManifestError(f"{where}: cut 0 must carry the model input {self.input.name!r}")
        if self.cuts[-1].tensor != self.output.name:
            raise ManifestError(f"{where}: the last cut must carry the model output {self.output.name!r}")
        if self.cuts[-1].bytes != 0:
            raise ManifestError(f"{where}: the fully-local cut sends nothing, so its bytes must be 0")


def _spec(d: dict[str, Any]) -> TensorSpec:
    return TensorSpec(str(d["name"]), tuple(int(x) for x in d["shape"]), str(d["dtype"]))
