"""Manifests and profiles are read once per file version (a live plan asks for them many times)."""

from __future__ import annotations

import os
import shutil

from splitrt.policy.sim.profiles import SHIPPED_MANIFESTS, load_manifest


def test_a_manifest_is_read_once_per_version(tmp_path):
    shutil.copy(SHIPPED_MANIFESTS / "resnet18.json", tmp_path / "resnet18.json")
    first = load_manifest("resnet18", tmp_path)
    assert load_manifest("resnet18", tmp_path) is first
    st = os.stat(tmp_path / "resnet18.json")
    os.utime(tmp_path / "resnet18.json", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # edited
    again = load_manifest("resnet18", tmp_path)
    assert again is not first and again.digest == first.digest
