"""Scenario presets, validation and KEY=VALUE overrides."""

from __future__ import annotations

import pytest

from splitrt.edge_runtime.errors import SplitrtError
from splitrt.policy.sim import scenario as config
from splitrt.policy.sim.workloads import reference_speed_flops_per_s


def test_paper_preset_is_table_one():
    sc = config.paper()
    assert (sc.bandwidth_hz, sc.noise_dbm, sc.tx_power_dbm) == (10e6, -114.0, 23.0)
    assert sc.cv_flops_per_s == (4e9, 6e9) and sc.sv_flops_per_s == (6e9, 8e9) and sc.rsu_flops_per_s == 30e9
    assert (sc.v2v_radius_m, sc.mean_speed_mps, sc.slots, sc.slot_s, sc.v) == (150.0, 25.0, 30, 1.0, 10.0)
    assert (sc.n_cvs, sc.n_svs, sc.n_nodes) == (5, 5, 6)
    assert sc.cv_models() == ["alexnet", "resnet18", "vgg16", "alexnet", "resnet18"]  # round-robin
    assert sc.types == ("alexnet", "resnet18", "vgg16")


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"slot_s": 0.0}, "slot_s = 0.0 must be > 0"),
        ({"n_cvs": 0}, "n_cvs = 0 must be >= 1"),
        ({"n_svs": -1}, "n_svs = -1"),
        ({"cv_flops_per_s": (6e9, 4e9)}, "cv_flops_per_s = (6000000000.0, 4000000000.0)"),
        ({"arrivals": "burst"}, "arrivals = 'burst' is not one of"),
        ({"arrivals": "bernoulli", "arrival_rate_per_slot": 1.5}, "must be a probability"),
        ({"mobility": "fcd"}, "fcd_file = ''"),
        ({"vehicle_profile_dir": "x"}, "must be given together"),
        ({"rsu_floor_flops_per_s": 11e9}, "leaves the RSU nothing"),
    ],
)
def test_validation_names_the_value(change, needle):
    with pytest.raises(SplitrtError, match=None) as err:
        config.paper(**change)
    assert needle in str(err.value)


def test_overrides_are_typed():
    values = config.parse_overrides(
        ["n_svs=3", "cv_flops_per_s=4e9,6e9", "models=alexnet,vgg16", "v=150", "arrivals=poisson"]
    )
    assert values == {
        "n_svs": 3,
        "cv_flops_per_s": (4e9, 6e9),
        "models": ("alexnet", "vgg16"),
        "v": 150.0,
        "arrivals": "poisson",
    }
    sc = config.paper(**values)
    assert sc.cv_models()[:3] == ["alexnet", "vgg16", "alexnet"]
    with pytest.raises(SplitrtError, match="'nosuch' is not a scenario setting"):
        config.parse_overrides(["nosuch=1"])
    with pytest.raises(SplitrtError, match="KEY=VALUE"):
        config.parse_overrides(["n_svs"])
    with pytest.raises(SplitrtError, match="n_svs='three'"):
        config.parse_overrides(["n_svs=three"])
    with pytest.raises(SplitrtError, match="needs 2"):
        config.parse_overrides(["sv_flops_per_s=6e9"])
    with pytest.raises(SplitrtError, match="unknown scenario preset 'table2'"):
        config.preset("table2")


def test_calibrated_preset_keeps_the_papers_ratios():
    sc = config.calibrated()
    f_ref = reference_speed_flops_per_s(config.SHIPPED_PROFILES, sc.types)
    assert sc.rsu_flops_per_s == pytest.approx(f_ref)
    assert sc.cv_flops_per_s[0] / sc.rsu_flops_per_s == pytest.approx(4 / 30)
    assert sc.sv_flops_per_s[1] / sc.rsu_flops_per_s == pytest.approx(8 / 30)
    # the slot shrinks with the speed-up: the work one slot brings per unit capacity is the paper's
    assert sc.slot_s * sc.rsu_flops_per_s == pytest.approx(1.0 * 30e9)
    assert sc.vehicle_profile_dir and sc.rsu_profile_dir
    # every value stays overridable
    assert config.calibrated(slot_s=1.0, n_cvs=3).slot_s == 1.0
    text = config.describe(sc)
    assert "rsu_flops_per_s" in text and "RSU compute" in text


def test_scenario_round_trips_through_json():
    import json

    sc = config.demo(slots=7, v=50.0)
    back = config.Scenario.from_dict(json.loads(json.dumps(sc.to_dict())), "config.json")
    assert back == sc and isinstance(back.models, tuple) and isinstance(back.cv_flops_per_s, tuple)
    with pytest.raises(SplitrtError, match="config.json: unknown scenario setting\\(s\\) lanes_x"):
        config.Scenario.from_dict({**sc.to_dict(), "lanes_x": 2}, "config.json")
    with pytest.raises(SplitrtError, match="slot_s = -1.0 must be > 0"):
        config.Scenario.from_dict({**sc.to_dict(), "slot_s": -1.0})
