"""Profiles: structure, consistency with the manifest, refusal of another manifest's profile."""

from __future__ import annotations

import json

import numpy as np
import pytest

from splitrt.edge_runtime.compute.profile import Profile, format_table, measure
from splitrt.edge_runtime.errors import ManifestError
from splitrt.edge_runtime.formats.manifest import Manifest
from splitrt.models.segmenter import segment_model
from tests.onnx_graphs import chain_model, residual_model


def test_profile_is_consistent_and_tied_to_its_manifest(tmp_path):
    chain, _ = segment_model(chain_model(), tmp_path / "chain", name="chain", source={})
    res, _ = segment_model(residual_model(), tmp_path / "res", name="res", source={})
    data = measure(chain, runs=3, warmup=1)
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(data))
    prof = Profile.load(path, chain)
    med = prof.segment_median_s
    assert len(med) == chain.n_segments and np.all(med > 0)
    # head + tail = sum of segment medians at every cut; head rises, tail falls
    np.testing.assert_allclose(prof.head_s + prof.tail_s, med.sum())
    assert prof.head_s[0] == 0 and prof.tail_s[-1] == 0
    assert np.all(np.diff(prof.head_s) > 0)
    assert [c["bytes"] for c in data["cuts"]] == chain.cut_bytes().tolist()
    assert data["effective_flops_per_s"] == pytest.approx(chain.total_flops / data["whole"]["median_s"])
    assert data["device"]["threads"] == 1 and data["device"]["cores_logical"] >= 1
    assert "chain" in format_table(data)
    with pytest.raises(ManifestError, match="measured for chain manifest"):
        Profile.load(path, res)
    assert Manifest.load(tmp_path / "chain").digest == data["manifest_sha256"]


def test_bad_profile_files(tmp_path):
    with pytest.raises(ManifestError, match="does not exist"):
        Profile.load(tmp_path / "nope.json")
    (tmp_path / "p.json").write_text('{"format_version": 1}')
    with pytest.raises(ManifestError, match="missing field"):
        Profile.load(tmp_path / "p.json")
