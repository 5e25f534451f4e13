"""Workloads come from the runtime's manifests (same cut indices) and, optionally, measured profiles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from splitrt.edge_runtime.compute.profile import Profile
from splitrt.edge_runtime.errors import ManifestError, SplitrtError
from splitrt.policy.sim import scenario as config
from splitrt.policy.sim.workloads import (
    SHIPPED_MANIFESTS,
    Workload,
    load_manifest,
    load_profile,
    load_workloads,
    reference_speed_flops_per_s,
)

MODELS = ("alexnet", "resnet18", "vgg16")


@pytest.mark.parametrize("model", (*MODELS, "mobilenet_v2"))
def test_shipped_manifest_has_the_cut_table_of_a_fresh_export(exports, model):
    fresh = exports.get(model)
    shipped = load_manifest(model)
    assert shipped.n_cuts == fresh.n_cuts
    np.testing.assert_array_equal(shipped.cut_bytes(), fresh.cut_bytes())
    np.testing.assert_array_equal(shipped.flops_before(), fresh.flops_before())
    np.testing.assert_array_equal(shipped.flops_after(), fresh.flops_after())
    assert [c.tensor for c in shipped.cuts] == [c.tensor for c in fresh.cuts]


def test_manifest_workload_is_eq6():
    man = load_manifest("resnet18")
    w = Workload.from_manifest(man)
    np.testing.assert_array_equal(w.cut_bytes, man.cut_bytes())
    np.testing.assert_array_equal(w.local_flops, man.flops_before())
    np.testing.assert_array_equal(w.rsu_flops, man.flops_after())
    np.testing.assert_array_equal(w.sv_flops, man.flops_after())
    # every cut splits the whole model: local + edge = all FLOPs; the last cut sends nothing
    np.testing.assert_array_equal(w.local_flops + w.rsu_flops, man.total_flops)
    assert w.cut_bytes[-1] == 0 and w.n_cuts == 13


def test_profiled_workload_reproduces_measured_times_at_the_reference_speed():
    d = config.SHIPPED_PROFILES
    f_ref = reference_speed_flops_per_s(d, MODELS)
    medians = sum(load_profile(m, d, load_manifest(m)).segment_median_s.sum() for m in MODELS)
    assert f_ref == pytest.approx(sum(load_manifest(m).total_flops for m in MODELS) / medians)
    sc = config.calibrated()
    wl = load_workloads(sc)
    for m in MODELS:
        prof = load_profile(m, d, load_manifest(m))
        # a device at f_ref runs the head / tail of every cut in exactly the measured time
        np.testing.assert_allclose(wl[m].local_flops / f_ref, prof.head_s, rtol=1e-12)
        np.testing.assert_allclose(wl[m].rsu_flops / f_ref, prof.tail_s, rtol=1e-12)
        np.testing.assert_allclose(wl[m].sv_flops / f_ref, prof.tail_s, rtol=1e-12)


def test_a_profile_of_another_export_is_refused(tmp_path):
    data = json.loads((config.SHIPPED_PROFILES / "alexnet.json").read_text())
    data["manifest_sha256"] = "0" * 64
    (tmp_path / "alexnet.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="was measured for alexnet manifest 000000000000"):
        load_profile("alexnet", tmp_path, load_manifest("alexnet"))
    assert isinstance(Profile.load(config.SHIPPED_PROFILES / "alexnet.json", load_manifest("alexnet")), Profile)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(SplitrtError, match=f"no manifest for 'squeezenet1_0' in {SHIPPED_MANIFESTS}"):
        load_manifest("squeezenet1_0")
    with pytest.raises(SplitrtError, match="no profile for 'vgg16'"):
        load_profile("vgg16", tmp_path, load_manifest("vgg16"))
    # a directory of exports (<model>/manifest.json) works too
    (tmp_path / "alexnet").mkdir()
    (tmp_path / "alexnet" / "manifest.json").write_text((SHIPPED_MANIFESTS / "alexnet.json").read_text())
    assert load_manifest("alexnet", tmp_path).digest == load_manifest("alexnet").digest
