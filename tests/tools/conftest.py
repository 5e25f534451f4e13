"""Fixtures of the tools tests."""

from __future__ import annotations

import shutil

import pytest

from splitrt.policy.sim import scenario as config
from splitrt.policy.sim.workloads import SHIPPED_MANIFESTS


@pytest.fixture(scope="session")
def shipped_exports(tmp_path_factory):
    """An exports directory of the demo's models with the shipped manifests and profiles (a plan
    needs no ONNX); read-only."""
    root = tmp_path_factory.mktemp("shipped_exports")
    for model in config.DEMO_MODELS:
        (root / model).mkdir()
        shutil.copy(SHIPPED_MANIFESTS / f"{model}.json", root / model / "manifest.json")
        shutil.copy(config.SHIPPED_PROFILES / f"{model}.json", root / model / "profile.json")
    return root
