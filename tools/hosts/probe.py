"""What a host can do, measured on the host: the script `splitrt doctor` and `splitrt hil --hosts`
send over SSH (``PYTHON - '<json args>'`` with this file on stdin), so a board needs nothing but
its splitrt device install. Standard library only at the top; it prints one JSON object.

Facts: Python, platform, the splitrt version and a digest of its ``edge_runtime`` sources (two
checkouts with the same version number but other code differ there), whether the device verbs
import with torch blocked, ONNX Runtime and its providers, cores, memory, free disk in the work
directory, which of the asked ports are free, whether tc is usable (root and the ``tc`` binary),
and the host's clock.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import socket
import sys
import time
from pathlib import Path

#: The device side of a run: what `splitrt serve` / `splitrt vehicle` import.
DEVICE_MODULES = (
    "splitrt.tools.cli.main",
    "splitrt.edge_runtime.node.server",
    "splitrt.edge_runtime.vehicle.client",
    "splitrt.edge_runtime.decide.onnx_policy",
    "splitrt.tools.cli.serve",
    "splitrt.tools.cli.vehicle",
)


def source_digest(package_dir: str | Path) -> str:
    """sha256 over the relative paths and contents of every .py file under ``package_dir``."""
    root = Path(package_dir)
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        if "__pycache__" in p.parts:
            continue
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def splitrt_identity() -> dict:
    """{"version", "source_digest"} of the splitrt this interpreter imports (errors as strings)."""
    out = {"version": None, "source_digest": None, "error": ""}
    try:
        from importlib.metadata import version

        out["version"] = version("splitrt")
    except Exception as exc:
        out["error"] = f"splitrt is not installed for {sys.executable}: {exc}"
        return out
    try:
        import splitrt.edge_runtime as er

        out["source_digest"] = source_digest(Path(er.__file__).parent)
    except Exception as exc:
        out["error"] = f"cannot import splitrt.edge_runtime: {exc}"
    return out


def facts(workdir: str = "", ports: tuple[int, ...] = ()) -> dict:
    info: dict = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "machine": platform.machine(),
        "system": f"{platform.system()} {platform.release()}",
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "uid": os.getuid() if hasattr(os, "getuid") else None,
    }
    info.update(splitrt_identity())
    blocked = {m: sys.modules.get(m) for m in ("torch", "torchvision")}
    try:
        for m in blocked:
            sys.modules[m] = None  # `import torch` now raises ImportError
        import importlib

        for m in DEVICE_MODULES:
            importlib.import_module(m)
        info["device_import"] = "ok"
    except Exception as exc:
        info["device_import"] = f"{type(exc).__name__}: {exc}"
    finally:
        for m, mod in blocked.items():
            if mod is None:
                sys.modules.pop(m, None)
            else:
                sys.modules[m] = mod
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["providers"] = list(ort.get_available_providers())
    except Exception as exc:
        info["onnxruntime"] = None
        info["providers"] = []
        info["onnxruntime_error"] = str(exc)
    info["memory_bytes"] = _memory()
    if workdir:
        w = Path(workdir).expanduser()
        try:
            w.mkdir(parents=True, exist_ok=True)
            info["workdir"] = str(w.resolve())
            info["disk_free_bytes"] = shutil.disk_usage(w).free
        except OSError as exc:
            info["workdir"] = str(w)
            info["disk_free_bytes"] = None
            info["workdir_error"] = str(exc)
    info["ports_busy"] = [p for p in ports if not _port_free(p)]
    info["tc"] = bool(info["uid"] == 0 and shutil.which("tc"))
    info["time_unix_s"] = time.time()
    return info


def _memory() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


if __name__ == "__main__":
    args = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    print(json.dumps(facts(args.get("workdir", ""), tuple(args.get("ports", ())))))
