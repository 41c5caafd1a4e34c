import pytest
import torch

from jointdiff.jedi.guidance import (
    FULL,
    IMAGE,
    NULL,
    STRATEGIES,
    TEXT,
    Guidance,
    cfg,
    joint_guidance,
    two_stage_guidance,
)


def _settings(strategy: str, text_scale: float, image_scale: float) -> Guidance:
    """The settings of ``strategy`` at these scales (the image scale where the strategy takes one)."""
    two = strategy not in STRATEGIES or STRATEGIES[strategy].two_scales
    return Guidance(strategy, text_scale, image_scale if two else None)


def combine(eps, strategy: str, text_scale: float, image_scale: float):
    return _settings(strategy, text_scale, image_scale).combine(eps)


def branches_for(strategy: str, text_scale: float, image_scale: float):
    return _settings(strategy, text_scale, image_scale).branches()


E0, ET, EI, EF = (torch.tensor([v]) for v in (1.0, 2.0, 4.0, 8.0))  # null, text-only, image-only, full
EPS = {NULL: E0, TEXT: ET, IMAGE: EI, FULL: EF}


def test_eq3_on_hand_made_tensors():
    assert torch.equal(joint_guidance(E0, EF, 3.0), torch.tensor([1.0 + 3.0 * 7.0]))
    assert torch.equal(combine(EPS, "joint", 3.0, 3.0), torch.tensor([22.0]))


def test_eq4_text_first_and_image_first_on_hand_made_tensors():
    # text first: eps1 = image-only; lambda_1 = image scale, lambda_2 = text scale.
    assert torch.equal(combine(EPS, "text_first", 2.0, 5.0), torch.tensor([1.0 + 5.0 * 3.0 + 2.0 * 4.0]))
    # image first: eps1 = text-only; lambda_1 = text scale, lambda_2 = image scale.
    assert torch.equal(combine(EPS, "image_first", 2.0, 5.0), torch.tensor([1.0 + 2.0 * 1.0 + 5.0 * 6.0]))
    assert torch.equal(two_stage_guidance(E0, ET, EF, 2.0, 5.0), torch.tensor([1.0 + 2.0 + 30.0]))


def test_text_only_is_cfg_with_references_in_both_branches():
    assert torch.equal(combine(EPS, "text_only", 3.0, 3.0), cfg(EI, EF, 3.0))


def test_reductions_to_plain_classifier_free_guidance():
    x = {b: torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(i)) for i, b in enumerate(EPS)}
    # Equal scales: both two-stage strategies equal eq. 3.
    for strategy in ("text_first", "image_first"):
        assert torch.allclose(combine(x, strategy, 6.0, 6.0), combine(x, "joint", 6.0, 6.0), atol=1e-5)
    # Scale 1: the conditional prediction itself; scale 0: the unconditional one.
    assert torch.allclose(joint_guidance(x[NULL], x[FULL], 1.0), x[FULL], atol=1e-6)
    assert torch.equal(joint_guidance(x[NULL], x[FULL], 0.0), x[NULL])
    # Image scale 1 in text-first: guidance acts on the text only, from the reference-conditioned branch.
    assert torch.allclose(
        combine(x, "text_first", 4.0, 1.0), x[NULL] + (x[IMAGE] - x[NULL]) + 4.0 * (x[FULL] - x[IMAGE])
    )


def test_branches_per_strategy_and_no_guidance_shortcut():
    assert branches_for("joint", 7.5, 7.5) == (NULL, FULL)
    assert branches_for("text_first", 7.5, 3.0) == (NULL, IMAGE, FULL)
    assert branches_for("image_first", 7.5, 3.0) == (NULL, TEXT, FULL)
    assert branches_for("text_only", 7.5, 7.5) == (IMAGE, FULL)
    assert branches_for("joint", 1.0, 1.0) == (FULL,)
    assert branches_for("text_first", 1.0, 2.0) == (NULL, IMAGE, FULL)
    with pytest.raises(ValueError, match="must be >= 0"):
        branches_for("joint", -1.0, 1.0)
    with pytest.raises(ValueError, match="unknown guidance strategy"):
        branches_for("both", 1.0, 1.0)


def test_every_entry_point_defaults_to_the_measured_guidance():
    """The pipeline, generate, evaluate, demo and the app take their guidance defaults from one place."""
    import inspect

    from jointdiff.app.services import JeDiService
    from jointdiff.cli import build_parser
    from jointdiff.evaluation.demo import run_demo
    from jointdiff.evaluation.options import MethodOptions
    from jointdiff.jedi.guidance import DEFAULT
    from jointdiff.jedi.pipeline import JointDiffusionPipeline

    assert (DEFAULT.strategy, DEFAULT.scale, DEFAULT.null_reference) == ("joint", 5.0, "drop")  # docs/evaluation.md
    call = inspect.signature(JointDiffusionPipeline.__call__).parameters
    pipeline = Guidance.of(**{k: call[k].default for k in DEFAULT.settings()})
    assert pipeline == DEFAULT
    parser = build_parser()
    for argv in (["generate", "--prompt", "a toy", "--out", "x"], ["evaluate", "--method", "jedi", "--out", "x"]):
        assert Guidance.from_args(parser.parse_args(argv)) == DEFAULT
    assert MethodOptions().guidance == DEFAULT
    assert inspect.signature(run_demo).parameters["guidance_scale"].default == DEFAULT.scale
    app = inspect.signature(JeDiService.generate).parameters
    assert app["guidance"].default == DEFAULT.strategy and app["guidance_scale"].default == DEFAULT.scale


def test_settings_are_checked_once_and_round_trip():
    g = Guidance("text_first", 4.0, 2.0, null_reference="mask", reference_attention="isolated")
    assert Guidance.of(**g.settings()) == g and g.image == 2.0 and Guidance("joint", 3.0).image == 3.0
    for kwargs, needle in (
        ({"strategy": "both"}, "unknown guidance strategy"),
        ({"scale": -1.0}, "guidance scale must be >= 0"),
        ({"strategy": "text_first", "image_scale": -2.0}, "image guidance scale must be >= 0"),
        ({"strategy": "joint", "scale": 5.0, "image_scale": 2.0}, "joint guidance has one scale"),
        ({"null_reference": "zero"}, "null_reference must be one of"),
        ({"reference_attention": "shared"}, "reference_attention must be one of"),
    ):
        with pytest.raises(ValueError, match=needle):
            Guidance(**kwargs)
    assert Guidance("joint", 5.0, 5.0).branches() == (NULL, FULL)  # an equal image scale is no contradiction
    with pytest.raises(AttributeError):
        g.scale = 1.0  # frozen: checked once, never changed after


def test_cli_options_come_from_the_settings_type():
    import argparse

    parser = argparse.ArgumentParser()
    Guidance.add_arguments(parser)
    argv = ["--guidance", "image_first", "--guidance-scale", "3", "--image-guidance-scale", "6"]
    argv += ["--null-reference", "mask", "--reference-attention", "isolated"]
    assert Guidance.from_args(parser.parse_args(argv)) == Guidance("image_first", 3.0, 6.0, "mask", "isolated")
    argv += ["--guidance-rescale", "0.7", "--guidance-start", "0.2", "--guidance-stop", "0.9"]
    expected = Guidance("image_first", 3.0, 6.0, "mask", "isolated", rescale=0.7, start=0.2, stop=0.9)
    assert Guidance.from_args(parser.parse_args(argv)) == expected
    assert Guidance.from_args(parser.parse_args([])) == Guidance()
    with pytest.raises(SystemExit):
        parser.parse_args(["--guidance", "both"])


def test_guidance_choices_and_defaults_live_in_one_module():
    """No other module of the package spells a strategy or a mode as a string of its own."""
    from pathlib import Path

    import jointdiff

    root = Path(jointdiff.__file__).parent
    names = [*STRATEGIES, "isolated"]
    for path in root.rglob("*.py"):
        if path.name == "guidance.py":
            continue
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        for name in names:
            assert f'"{name}"' not in code.replace('``"', ""), f"{path.relative_to(root)} spells {name!r}"


def test_guidance_rescale_on_hand_made_tensors():
    """Lin et al. 2024 eq. 15-16 per image: phi = 1 gives each guided image the standard deviation of the full
    prediction, phi = 0.5 the mean of that and the plain guided image, phi = 0 leaves eq. 3 unchanged."""
    null = torch.zeros(1, 2, 1, 2, 2)
    full = torch.tensor([[1.0, -1.0, 1.0, -1.0], [2.0, 0.0, 2.0, 0.0]]).reshape(1, 2, 1, 2, 2)
    eps = {NULL: null, FULL: full}
    plain = Guidance("joint", 5.0).combine(eps)
    assert torch.equal(plain, 5.0 * full)  # eq. 3 with eps^0 = 0
    rescaled = Guidance("joint", 5.0, rescale=1.0).combine(eps)
    # image 0: std(5 full) = 5 std(full): divided by 5; image 1 (mean 1): the same factor, the mean shrinks with it
    assert torch.allclose(rescaled, full, atol=1e-6)
    half = Guidance("joint", 5.0, rescale=0.5).combine(eps)
    assert torch.allclose(half, 0.5 * full + 0.5 * 5.0 * full, atol=1e-6)
    per_image = Guidance("joint", 5.0, rescale=1.0).combine(
        {NULL: null, FULL: full * torch.tensor([1.0, 3.0]).reshape(1, 2, 1, 1, 1)}
    )
    assert torch.allclose(
        per_image.flatten(2).std(-1), (full * torch.tensor([1.0, 3.0]).reshape(1, 2, 1, 1, 1)).flatten(2).std(-1)
    )
    assert torch.equal(Guidance("joint", 5.0, rescale=0.0).combine(eps), plain)


@pytest.mark.parametrize(("start", "stop", "steps"), [(0.0, 1.0, 25), (0.2, 0.8, 25), (0.0, 0.5, 7), (0.35, 1.0, 50)])
def test_guidance_interval_steps_match_diffusers_guiders(start, stop, steps):
    """The guided steps are those of diffusers' ClassifierFreeGuidance with the same start / stop."""
    from diffusers.guiders import ClassifierFreeGuidance

    guider = ClassifierFreeGuidance(guidance_scale=5.0, start=start, stop=stop)
    expected = []
    for i in range(steps):
        guider.set_state(step=i, num_inference_steps=steps, timestep=torch.tensor(999 - i))
        expected.append(guider._is_cfg_enabled())
    assert Guidance(start=start, stop=stop).guided_steps(steps) == expected
    assert Guidance(start=start, stop=stop).limited == (start > 0 or stop < 1)


def test_guidance_rescale_and_interval_are_checked_and_round_trip():
    g = Guidance("joint", 5.0, rescale=0.7, start=0.1, stop=0.9)
    assert Guidance.of(**g.settings()) == g
    assert g.unguided().branches() == (FULL,) and not g.unguided().limited
    for kwargs, needle in (
        ({"rescale": 1.5}, "guidance rescale must be in"),
        ({"rescale": -0.1}, "guidance rescale must be in"),
        ({"start": 0.5, "stop": 0.5}, "guidance interval needs"),
        ({"stop": 1.2}, "guidance interval needs"),
    ):
        with pytest.raises(ValueError, match=needle):
            Guidance(**kwargs)


def test_runs_record_the_new_guidance_keys_only_when_set():
    """A cached evaluate run made before guidance rescale and the interval existed compares equal to a run with them
    off; a run with one of them set records it (issue 27)."""
    from jointdiff.evaluation.options import GUIDANCE_OFF, RUN_GUIDANCE_KEYS, MethodOptions

    assert set(GUIDANCE_OFF) == set(Guidance().settings()) - set(RUN_GUIDANCE_KEYS)
    assert Guidance.of(**GUIDANCE_OFF) == Guidance()  # "off" is the default today
    plain = MethodOptions().settings()
    assert not set(GUIDANCE_OFF) & set(plain)
    started = MethodOptions(guidance=Guidance(start=0.2)).settings()
    assert started == plain | {"guidance_start": 0.2}
