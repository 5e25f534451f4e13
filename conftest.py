"""Fixtures shared by tests/ and hil_tests/: exports are made once per test session and reused
read-only (a root conftest, so one pytest run exports each model once for both suites)."""

from __future__ import annotations

from pathlib import Path

import pytest

from splitrt.edge_runtime.formats.manifest import Manifest


class ExportCache:
    """Exports torchvision models on first use into one session directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, tuple[Manifest, object]] = {}

    def get(self, name: str) -> Manifest:
        return self.get_with_parity(name)[0]

    def get_with_parity(self, name: str):
        if name not in self._cache:
            from splitrt.models.torchvision_export import export_torchvision

            self._cache[name] = export_torchvision(name, self.root / name)
        return self._cache[name]


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> ExportCache:
    return ExportCache(tmp_path_factory.mktemp("exports"))
