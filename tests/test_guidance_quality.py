"""The rule of benchmarks/guidance_quality.py (issue 27), fixed before its run, on hand-made scores."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "guidance_quality.py"


@pytest.fixture(scope="module")
def gq():
    spec = importlib.util.spec_from_file_location("guidance_quality", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _s(partid: float, clip_t: float, fd: float) -> dict[str, float]:
    return {"partid": partid, "clip_t": clip_t, "fd": fd}


def test_the_rule_takes_the_lowest_fd_that_keeps_identity_and_clip_t(gq):
    s = {
        "noref": _s(0.0, 0.7300, 22.0),
        "joint": _s(0.800, 0.7000, 19.0),
        "keeps": _s(0.785, 0.7000, 15.0),  # 0.015 below: within the slack
        "loses_identity": _s(0.775, 0.7100, 10.0),  # 0.025 below
        "loses_text": _s(0.810, 0.6930, 11.0),  # 0.949x the no-reference CLIP-T
        "worse_fd": _s(0.820, 0.7100, 19.5),
    }
    names = ["keeps", "loses_identity", "loses_text", "worse_fd"]
    assert [gq.passes(s, n) for n in names] == [True, False, False, True]
    assert gq.choose(s, names) == "keeps"
    assert gq.choose(s, ["loses_identity", "worse_fd"]) == "joint"  # nothing passes with a lower FD: the default


def test_a_combination_row_joins_the_settings_options(gq):
    row = gq.setting_row("rescale-0.7+start-0.2", 5.0)
    assert row.argv[-4:] == ["--guidance-rescale", "0.7", "--guidance-start", "0.2"]
    assert row.argv[:4] == ["--method", "jedi", "--guidance", "joint"]
    assert row.label == "joint, guidance rescale 0.7, guided from 20% of the steps"


def _row(partid: float, clip_t: float) -> dict:
    return {"overall": {"PartID": partid, "DINO": partid, "CLIP-T": clip_t}}


def test_the_toy_table_states_the_fd_goal_of_its_interval_row(gq):
    tw = gq.tw
    interval = next(r for r in tw.table_rows(5.0, 1.0) if r.name == "joint_interval")
    assert interval.argv[-4:] == gq.SETTINGS["interval-0.2-0.8"][1]  # the row runs the setting the rule chose
    rows = {
        "real": _row(0.6, 0.73),
        "floor": _row(0.1, 0.73),
        "joint": _row(0.5, 0.70),
        "joint_interval": _row(0.45, 0.71),
    }

    def line(fd: dict[str, float] | None) -> str:
        return next(c for c in tw.claims(rows, {}, tw.SWEEP_SCALES, fd) if c.startswith("- Guidance interval"))

    assert "normalised PartID 0.700 vs 0.800" in line(None) and "FD" not in line(None)
    assert "FD 14.35, the goal (at most 14.35, half of version 1's) **holds**" in line({"joint_interval": 14.35})
    assert "**does not hold**" in line({"joint_interval": 14.36})
    without_joint = {k: v for k, v in rows.items() if k != "joint"}  # a --rows joint_interval run: no line, no error
    assert not any(c.startswith("- Guidance interval") for c in tw.claims(without_joint, {}, tw.SWEEP_SCALES, {}))
