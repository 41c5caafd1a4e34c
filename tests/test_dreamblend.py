import copy

import numpy as np
import pytest
import torch
from conftest import randn
from diffusers.models.attention_processor import AttnProcessor2_0

from jointdiff.cli import main
from jointdiff.common.tiny import TEXT_DIM, tiny_components
from jointdiff.dreamblend.blend import (
    BlendConfig,
    blend,
    blend_batch,
    blend_from_run,
    checkpoint_prompt_fidelity,
    choose_overfit,
    choose_underfit,
    guided_sample,
    record_maps,
)
from jointdiff.dreamblend.crossattn import AttentionStore, alignment_loss, collapse_score, install_recorders
from jointdiff.jedi.t2i import TextToImage
from jointdiff.testing import save_tiny_run
from jointdiff.training.dreambooth import finetune, list_checkpoints, load_checkpoint

PROMPT = "a photo of sks toy on the beach"


def _sharpen(model: TextToImage, factor: float = 30.0) -> TextToImage:
    """Scale cross-attention queries so the tiny random model has peaked, informative maps."""
    with torch.no_grad():
        for name, module in model.unet.named_modules():
            if name.endswith("attn2"):
                module.to_q.weight.mul_(factor)
    return model


def _model(seed: int = 0) -> TextToImage:
    c = tiny_components(seed)
    c["unet"].requires_grad_(False)
    return _sharpen(TextToImage(**c))


def test_recorder_matches_stock_attention_and_maps_are_distributions(unet):
    x, emb = randn(2, 4, 8, 8), randn(2, 7, TEXT_DIM, seed=1)
    unet.set_attn_processor(AttnProcessor2_0())
    with torch.no_grad():
        expected = unet(x, 10, emb).sample
        store = AttentionStore()
        names = install_recorders(unet, store)
        store.start()
        out = unet(x, 10, emb).sample
        maps = store.stop()
    assert torch.allclose(out, expected, atol=1e-5)
    assert set(maps) == set(names) and len(names) == 4  # down (1), mid (1) and up (2) cross-attention of the tiny U-Net
    for m in maps.values():
        assert m.shape[0] == 2 and m.shape[2] == 7
        assert torch.allclose(m.sum(-1), torch.ones(m.shape[:2]), atol=1e-5)


def test_alignment_loss_and_collapse_score_on_hand_made_maps():
    # Two layers of 4 pixels x 3 tokens; token 1 is the subject.
    a = torch.tensor([[[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.4, 0.3, 0.3]]])
    maps = {"l1": a, "l2": a}
    assert alignment_loss(maps, maps, [0, 1, 2]).item() == 0.0
    b = a.flip(1)
    # Token 0's spatial distribution is (0.8, .1, .1, .4)/1.4 vs reversed: squared distance summed, x 4 pixels.
    da = a[0, :, 0] / a[0, :, 0].sum()
    db = b[0, :, 0] / b[0, :, 0].sum()
    expected = 2 * 4 * ((da - db) ** 2).sum()
    assert torch.allclose(alignment_loss({"l1": a, "l2": a}, {"l1": b, "l2": b}, [0]), expected)
    # Collapse: every token's map equals the subject's -> the others' mass sits in the subject region.
    collapsed = {"l": a[:, :, [1, 1, 1]]}
    normal = {"l": a}
    assert collapse_score(collapsed, [1], [0, 2], quantile=0.75) > 0.5
    assert collapse_score(normal, [1], [0, 2], quantile=0.75) < collapse_score(collapsed, [1], [0, 2], quantile=0.75)


def test_collapse_score_ranks_a_collapsed_model_above_a_normal_one():
    normal = _model()
    collapsed = _model()
    subject = normal.token_indices(PROMPT, ["sks", "toy"])
    others = [i for i in normal.prompt_tokens(PROMPT) if i not in subject]
    # Deliberate collapse: every prompt token carries the subject's text features, so every
    # token's cross-attention map becomes the subject's map.
    tokens = normal.prompt_tokens(PROMPT)
    encoder = collapsed.text_encoder
    original_forward = encoder.forward

    def forward(*args, **kwargs):
        out = original_forward(*args, **kwargs)
        h = out[0].clone()
        h[:, tokens] = h[:, subject].mean(dim=1, keepdim=True)
        out.last_hidden_state = h
        return out

    encoder.forward = forward
    x = randn(1, 4, 8, 8, seed=5)
    cfg = BlendConfig(num_inference_steps=4)
    scores = []
    for model in (normal, collapsed):
        _, maps = record_maps(model, [PROMPT], x, cfg)
        scores.append(collapse_score(maps[2], subject, others))
    assert scores[1] > scores[0] + 0.08  # measured: 0.19 vs 0.33


def test_overfit_choice_is_the_latest_checkpoint_before_collapse():
    assert choose_overfit({5: 0.20, 50: 0.25, 250: 0.38, 1000: 0.71}, margin=0.2) == 250
    assert choose_overfit({5: 0.20, 50: 0.9}, margin=0.2) == 5


def test_underfit_choice_is_the_latest_prompt_faithful_checkpoint_before_the_overfit_one():
    clip_t = {5: 0.300, 25: 0.290, 50: 0.270, 100: 0.250, 250: 0.200}
    assert choose_underfit(clip_t, before=250, margin=0.05) == 25  # 0.290 >= 0.95 x 0.300; 0.270 is not
    assert choose_underfit(clip_t, before=250, margin=0.20) == 100  # 0.250 >= 0.80 x 0.300
    assert choose_underfit(clip_t, before=25, margin=0.20) == 5  # only checkpoints before the overfit one
    assert choose_underfit(clip_t, before=5) == 5  # nothing earlier: the earliest
    assert choose_underfit({5: 0.2, 25: 0.3, 50: 0.1}, before=100) == 25  # the best is not always the first


class _BrightnessClip:
    """A dual encoder whose CLIP-T is a known function of the image: cos([m, 1], [0, 1]) = 1 / sqrt(1 + m^2),
    m the mean pixel value in [0, 1]; it records the texts it is given."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def encode_images(self, images):
        m = torch.tensor([np.asarray(im, dtype=np.float32).mean() / 255 for im in images])
        return torch.stack([m, torch.ones_like(m)], 1)

    def encode_texts(self, texts):
        self.texts += list(texts)
        return torch.tensor([[0.0, 1.0]] * len(texts))


def test_prompt_fidelity_of_checkpoints_scores_their_samples(run_dir):
    from jointdiff.jedi.t2i import sample

    run, clip = run_dir / "run", _BrightnessClip()
    scores = checkpoint_prompt_fidelity(run, [PROMPT], clip, images_per_prompt=2, num_inference_steps=3)
    assert sorted(scores) == list_checkpoints(run) == [2, 6]
    assert clip.texts == ["a photo of toy on the beach"] * 2  # CLIP-T prompt: the identifier removed
    model = load_checkpoint(run, 6)
    images = model.decode(sample(model, [PROMPT] * 2, torch.Generator().manual_seed(0), num_inference_steps=3))
    m = torch.tensor([np.asarray(im, dtype=np.float32).mean() / 255 for im in images])
    assert scores[6] == pytest.approx(float((1 / (1 + m**2).sqrt()).mean()), abs=1e-6)
    assert scores == checkpoint_prompt_fidelity(run, [PROMPT], clip, images_per_prompt=2, num_inference_steps=3)


def test_guidance_lowers_attention_distance_to_the_reference():
    underfit, overfit = _model(0), _model(0)
    with torch.no_grad():  # a different checkpoint of the same model
        for p in overfit.unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    x = randn(1, 4, 8, 8, seed=3)
    cfg = BlendConfig(num_inference_steps=6, cag_scale=0.0, collapse_weight=0.0, cag_fraction=1.0)
    _, reference = record_maps(underfit, [PROMPT], x, cfg)
    tokens = overfit.prompt_tokens(PROMPT)
    _, unguided = record_maps(overfit, [PROMPT], x, cfg)
    free = [alignment_loss(unguided[i], reference[i], tokens).item() for i in range(6)]
    cfg.cag_scale = 2.0
    _, (guided,) = guided_sample(overfit, [PROMPT], x, reference, cfg, ["sks", "toy"])
    # guided[i] is measured at step i on the guided trajectory (before that step's update).
    assert np.mean(guided[1:]) < np.mean(free[1:])


@pytest.mark.parametrize("maps", ["record", "invert"])
def test_a_batch_of_prompts_blends_each_as_if_alone(maps):
    """blend_batch guides every image by its own gradient: each equals blend() of its prompt alone."""
    underfit, overfit = _model(0), _model(0)
    with torch.no_grad():
        for p in overfit.unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    prompts = [PROMPT, "a red sks toy", "sks toy in the snow with a very long prompt about mountains"]
    cfg = BlendConfig(num_inference_steps=4, cag_scale=2.0, reference_maps=maps)
    images, refs, losses = blend_batch(underfit, overfit, prompts, ["sks", "toy"], [3, 4, 5], cfg)
    for b, prompt in enumerate(prompts):
        # invert: the same (8-bit) reference image, or a rounding difference in it would be inverted too
        given = refs[b] if maps == "invert" else None
        image, ref, loss = blend(underfit, overfit, prompt, ["sks", "toy"], seed=3 + b, cfg=cfg, reference_image=given)
        assert np.abs(np.asarray(images[b], np.int16) - np.asarray(image, np.int16)).max() <= 1
        assert np.abs(np.asarray(refs[b], np.int16) - np.asarray(ref, np.int16)).max() <= 1
        assert loss == pytest.approx(losses[b], rel=1e-4)
    assert len(losses[0]) == round(cfg.cag_fraction * 4) and losses[0] != losses[1]
    # the guidance moved the images: without it the overfit checkpoint samples something else
    plain, _, _ = blend_batch(underfit, overfit, prompts, ["sks", "toy"], [3, 4, 5], BlendConfig(4, cag_scale=0.0))
    assert (
        max(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() for a, b in zip(images, plain, strict=True))
        > 2
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("db")
    save_tiny_run(root)
    return root


def test_blend_from_run_refuses_two_different_step_counts(run_dir):
    with pytest.raises(ValueError, match=r"num_inference_steps=4 but cfg\.num_inference_steps=3: give one"):
        blend_from_run(run_dir / "run", PROMPT, num_inference_steps=4, cfg=BlendConfig(num_inference_steps=3))


def test_checkpoints_save_small_artefacts_and_load(run_dir):
    run = run_dir / "run"
    assert list_checkpoints(run) == [2, 6]
    lora = run / "checkpoints" / "step-000006" / "lora.safetensors"
    base_size = (run_dir / "base" / "unet" / "diffusion_pytorch_model.safetensors").stat().st_size
    assert lora.stat().st_size < base_size / 2
    m0, m2, m6 = (load_checkpoint(run, s) for s in (0, 2, 6))
    x, emb = randn(1, 4, 8, 8), randn(1, 5, TEXT_DIM)
    with torch.no_grad():
        e0, e2, e6 = (m.eps(x, 100, emb) for m in (m0, m2, m6))
    assert (e2 - e0).abs().max() > 1e-6 and (e6 - e2).abs().max() > 1e-6  # training changed the model
    again = load_checkpoint(run, 6)
    with torch.no_grad():
        assert torch.equal(again.eps(x, 100, emb), e6)
    # the LoRA weights are merged into the base weights on load; unmerged, the same model
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in again.unet.modules() if isinstance(m, BaseTunerLayer)]
    assert layers and all(m.merged for m in layers)
    for m in layers:
        m.unmerge()
    with torch.no_grad():
        torch.testing.assert_close(again.eps(x, 100, emb), e6, atol=1e-5, rtol=1e-5)


def test_class_images_in_batches_are_the_images_drawn_one_at_a_time(tmp_path):
    from jointdiff.training.dreambooth import DreamBoothConfig, class_images

    model = TextToImage(**tiny_components(0))
    cfg = DreamBoothConfig(
        base="tiny", images="x", class_word="toy", out="x", num_class_images=5, class_sampling_steps=3
    )
    alone = class_images(model, cfg, tmp_path / "alone", batch_size=1)
    (tmp_path / "batched").mkdir()
    alone[1].save(tmp_path / "batched" / "00001.png")  # a cached image is kept, the rest drawn 3 at a time
    batched = class_images(model, cfg, tmp_path / "batched", batch_size=3)
    assert len(batched) == 5
    pixels = [np.asarray(im, dtype=np.int16) for im in alone]
    for a, b in zip(pixels, (np.asarray(im, dtype=np.int16) for im in batched), strict=True):
        assert np.abs(a - b).max() <= 1  # the same draws; batching moves a pixel by at most one level
    assert np.abs(pixels[0] - pixels[2]).max() > 10  # and the images differ from each other


def test_interrupted_finetune_resumes_to_identical_weights(run_dir, tmp_path, monkeypatch):
    import jointdiff.training.dreambooth as db
    import jointdiff.training.shell as shell

    cfg = db.run_config(run_dir / "run")
    cfg.out = str(tmp_path / "cut")
    calls = {"n": 0}
    save = shell.save_checkpoint

    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(shell, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        finetune(copy.deepcopy(cfg))
    monkeypatch.setattr(shell, "save_checkpoint", save)
    finetune(copy.deepcopy(cfg))
    from safetensors.torch import load_file

    a = load_file(run_dir / "run" / "checkpoints" / "step-000006" / "lora.safetensors")
    b = load_file(tmp_path / "cut" / "checkpoints" / "step-000006" / "lora.safetensors")
    assert calls["n"] == 1 and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_blend_cli_and_its_errors(run_dir, tmp_path, capsys):
    from jointdiff.testing.evaluation import save_tiny_clip

    run = str(run_dir / "run")
    out = tmp_path / "b"
    clip = ["--clip-model", str(save_tiny_clip(tmp_path / "clip"))]
    assert main(["blend", "--run", run, "--prompt", PROMPT, "--steps", "3", "--out", str(out), *clip]) == 0
    assert (out / "blend.png").is_file() and (out / "grid.png").is_file()
    said = capsys.readouterr().out
    assert "attention-collapse score" in said and "whose CLIP-T is within 5% of the best" in said
    assert "underfit step 2" in said  # the only checkpoint before the overfit one (6, or 2 alone)
    for argv, needle in (
        (["--underfit", "6", "--overfit", "2"], "must not be later than"),
        (["--underfit", "3"], "no underfit checkpoint at step 3"),
    ):
        assert main(["blend", "--run", run, "--prompt", PROMPT, *argv]) == 2
        assert needle in capsys.readouterr().err
    assert main(["blend", "--run", str(run_dir / "base"), "--prompt", PROMPT]) == 2
    assert "not a DreamBooth run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not a png")
    for folder, needle in (("empty", "no input images"), ("bad", "cannot read image")):
        argv = ["finetune", "--base", str(run_dir / "base"), "--images", str(tmp_path / folder), "--class-word", "toy"]
        assert main([*argv, "--out", str(tmp_path / "r")]) == 2
        assert needle in capsys.readouterr().err


def test_token_map_averages_layers_and_steps_at_one_size_and_peaks_at_one():
    from jointdiff.dreamblend.crossattn import token_map

    # token 1 looks at the top-left quarter at 4x4; at 2x2 at the top-left cell; token 0 elsewhere
    fine = torch.zeros(1, 16, 3)
    fine[0, :, 0] = 1.0
    for i in (0, 1, 4, 5):
        fine[0, i] = torch.tensor([0.0, 1.0, 0.0])
    coarse = torch.zeros(1, 4, 3)
    coarse[0, :, 0] = 1.0
    coarse[0, 0] = torch.tensor([0.0, 0.5, 0.5])
    steps = [{"a": fine, "b": coarse}, {"a": fine, "b": coarse}]
    m = token_map(steps, [1], size=4)
    assert m.shape == (1, 4, 4) and m.max() == 1.0
    expected = (
        fine[0, :, 1].reshape(4, 4)
        + torch.nn.functional.interpolate(
            coarse[:, :, 1].reshape(1, 1, 2, 2), size=(4, 4), mode="bilinear", align_corners=False
        )[0, 0]
    ) / 2
    torch.testing.assert_close(m[0], expected / expected.max())
    assert m[0, :2, :2].mean() > 0.8 and m[0, 2:, 2:].max() < 0.2  # the quarter token 1 looks at
    with pytest.raises(ValueError, match="not a square"):
        token_map([{"a": torch.zeros(1, 6, 3)}], [0], 4)
