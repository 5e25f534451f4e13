"""Finding and reading the manifests and profiles the simulator's workloads come from, and a
profiled device's reference speed. Kept apart from policy/sim/workloads.py so that the scenario
config (policy/sim/scenario.py, which needs the reference speed for calibrated scenarios) and the
workloads (which need the config) do not import each other."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

from splitrt.edge_runtime.compute.profile import Profile
from splitrt.edge_runtime.errors import SplitrtError
from splitrt.edge_runtime.formats.manifest import MANIFEST_FILE, Manifest

#: the shipped data: manifests, profiles, SUMO networks (policy/data/README.md)
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
SHIPPED_MANIFESTS = DATA_DIR / "manifests"


def _find(directory: Path, model: str, inner: str, what: str) -> Path:
    for path in (directory / f"{model}.json", directory / model / inner):
        if path.is_file():
            return path
    raise SplitrtError(f"no {what} for {model!r} in {directory} (looked for {model}.json and {model}/{inner})")


def _version(path: Path) -> tuple[str, int, int]:
    """A file's identity for the caches below: path, mtime and size (an edited file is read again)."""
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=256)
def _manifest(version: tuple[str, int, int]) -> Manifest:
    return Manifest.load(Path(version[0]))


_PROFILES: dict[tuple[tuple[str, int, int], str], Profile] = {}


def _profile(version: tuple[str, int, int], manifest: Manifest) -> Profile:
    key = (version, manifest.digest)
    if key not in _PROFILES:
        _PROFILES[key] = Profile.load(Path(version[0]), manifest)
    return _PROFILES[key]


def load_manifest(model: str, manifest_dir: str | Path = "") -> Manifest:
    """The manifest of ``model`` from ``manifest_dir`` ('' = the shipped ones). Read once per file
    version: a live plan and the simulator ask for the same files many times (both classes are frozen)."""
    directory = Path(manifest_dir) if manifest_dir else SHIPPED_MANIFESTS
    return _manifest(_version(_find(directory, model, MANIFEST_FILE, "manifest")))


def load_profile(model: str, profile_dir: str | Path, manifest: Manifest) -> Profile:
    """The profile of ``model`` in ``profile_dir``; refused if measured for another export. Read
    once per file version and manifest, like `load_manifest`."""
    return _profile(_version(_find(Path(profile_dir), model, "profile.json", "profile")), manifest)


def reference_speed_flops_per_s(profile_dir: str | Path, models: Sequence[str], manifest_dir: str | Path = "") -> float:
    """f_ref of a profiled device: total FLOPs of ``models`` over the sum of their segment medians."""
    flops = 0.0
    seconds = 0.0
    for model in dict.fromkeys(models):
        manifest = load_manifest(model, manifest_dir)
        flops += manifest.total_flops
        seconds += float(load_profile(model, profile_dir, manifest).segment_median_s.sum())
    if seconds <= 0:
        raise SplitrtError(f"profiles in {profile_dir} have no positive segment times")
    return flops / seconds
