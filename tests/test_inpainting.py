"""A stock diffusers inpainting model as a joint U-Net without conversion (issue 32): the layout detection,
the channel adapter, parity with diffusers' StableDiffusionInpaintPipeline, the replacement trick with
references and the training-free options on it. Tiny random models built from the real classes."""

import copy
import json
import math

import PIL.Image
import pytest
import torch
from conftest import randn, text
from diffusers import DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel

from jointdiff.common.tiny import save_tiny_base, save_tiny_inpainting, tiny_components
from jointdiff.jedi.layouts import LAYOUT_KEY, InpaintingLayout, JointLayout, detect_layout
from jointdiff.jedi.model import JointUNet
from jointdiff.jedi.pipeline import JointDiffusionPipeline

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def _inpainting():
    return tiny_components(seed=0, inpainting=True)


@pytest.fixture
def pipe(_inpainting):
    p = JointDiffusionPipeline(**copy.deepcopy(_inpainting))
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def inpainting_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("inpainting")
    save_tiny_inpainting(path, seed=0)
    return path


def _image(seed: int) -> PIL.Image.Image:
    g = torch.Generator().manual_seed(seed)
    return PIL.Image.fromarray((torch.rand(16, 16, 3, generator=g) * 255).byte().numpy())


def test_layout_detection_reads_the_unet_config():
    recorded = {"in_channels": 9, "out_channels": 4, LAYOUT_KEY: JointLayout(4).to_config()}
    stock = {"in_channels": 9, "out_channels": 4}
    assert detect_layout(recorded) == detect_layout(recorded, "jedi") == JointLayout(4)
    assert detect_layout(stock) == detect_layout(stock, "inpainting") == InpaintingLayout(4)
    assert detect_layout(stock, "jedi") == JointLayout(4)  # forced: a JeDi U-Net whose config lost the record
    assert detect_layout({"in_channels": 33, "out_channels": 16}) == InpaintingLayout(16)
    assert InpaintingLayout(4).channels == ("noisy", "mask", "masked_image") and InpaintingLayout(4).in_channels == 9
    for config, layout, needle in (
        (recorded, "inpainting", "not a stock inpainting model"),
        ({"in_channels": 4, "out_channels": 4}, "auto", "not reference-conditioned"),
        ({"in_channels": 8, "out_channels": 4}, "jedi", "in_channels=8, out_channels=4"),  # instruct-pix2pix
        (stock, "sdxl", "layout must be one of auto, jedi, inpainting"),
        ({}, "auto", "no in_channels"),
    ):
        with pytest.raises(ValueError, match=needle) as e:
            detect_layout(config, layout, source="m")
        assert "\n" not in str(e.value)


def test_adapter_feeds_the_stock_channel_order(_inpainting):
    """noisy | mask (1 = paint) | masked image: the reference's latent where known, the empty latent elsewhere;
    a set of one with nothing known is the stock U-Net on diffusers' own concatenation."""
    unet = copy.deepcopy(_inpainting["unet"])
    stock = copy.deepcopy(unet)
    model = JointUNet.with_joint_attention(unet)
    x, ref, emb, empty = randn(1, 2, 4, 8, 8), randn(1, 2, 4, 8, 8, seed=3), text(1, 2), randn(4, 8, 8, seed=5)
    known = torch.tensor([[True, False]])
    seen = []
    hook = unet.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    with torch.no_grad():
        model(x, 10, emb, ref, known, empty=empty)
        single = model(x[:, 1:], 10, emb[:, 1:], empty=empty)[:, 0]
        expected = stock(torch.cat([x[:, 1], torch.ones(1, 1, 8, 8), empty[None]], dim=1), 10, emb[:, 1]).sample
    hook.remove()
    fed = seen[0]  # (2, 9, 8, 8): the reference, then the target
    assert torch.equal(fed[:, :4], x[0])
    assert fed[0, 4].eq(0).all() and fed[1, 4].eq(1).all()
    assert torch.equal(fed[0, 5:], ref[0, 0]) and torch.equal(fed[1, 5:], empty)
    assert torch.allclose(single, expected, atol=1e-6)
    with pytest.raises(ValueError, match="needs `empty`"):
        model(x, 10, emb, ref, known)
    with pytest.raises(ValueError, match=r"empty must be one latent of shape \(4, 8, 8\)"):
        model(x, 10, emb, ref, known, empty=empty[None])


def test_parity_with_stable_diffusion_inpaint_pipeline_without_references(inpainting_dir):
    """No references, the target fully masked: diffusers' pipeline given the same masked-image latent (the
    empty latent; by default it samples the VAE posterior with the generator, we take its mode). Same
    operations in the same order (the U-Net batch [negative; positive], the stock processors for sets of one,
    the same scheduler updates): measured identical on CPU fp32; 1e-6 in [0, 1] pixels allows only kernel
    reordering on another machine."""
    sd = StableDiffusionInpaintPipeline.from_pretrained(inpainting_dir)
    ours = JointDiffusionPipeline.from_pretrained(inpainting_dir)
    assert ours.joint_unet.layout == InpaintingLayout(4) and isinstance(ours.scheduler, DDIMScheduler)
    for p in (sd, ours):
        p.set_progress_bar_config(disable=True)
    empty = ours.empty_latent(16, 16, CPU)
    white = PIL.Image.new("L", (16, 16), 255)  # everything to paint
    for steps, scale in ((6, 7.5), (3, 1.0)):
        kw = {"num_inference_steps": steps, "guidance_scale": scale, "output_type": "np", "num_images_per_prompt": 2}
        a = sd(
            "a red toy",
            image=_image(1),
            mask_image=white,
            masked_image_latents=empty[None],
            generator=torch.Generator().manual_seed(3),
            **kw,
        ).images
        b = ours("a red toy", generator=torch.Generator().manual_seed(3), **kw).images
        assert a.shape == b.shape == (2, 16, 16, 3)
        assert abs(a - b).max() < 1e-6


def test_references_stay_fixed_and_change_the_targets(pipe):
    """The replacement trick (sec. 3.3) on the stock model: at every step the reference slot is the forward
    diffusion of the encoded reference, with mask 0 and its clean latent as the masked image; targets get
    mask 1 and the empty latent; the reference changes the targets."""
    refs = [_image(5)]
    ref_latent = pipe.encode_references(refs, 16, 16, CPU)[0]  # (C, h, w)
    empty = pipe.empty_latent(16, 16, CPU)
    fed, noises = [], []
    hook = pipe.unet.register_forward_pre_hook(lambda _m, args: fed.append(args[0].clone()))

    def record(_pipe, i, t, tensors):
        noises.append((t, tensors["reference_noise"][0, 0].clone()))

    kw = {"num_inference_steps": 4, "output_type": "np", "guidance_scale": 3.0}
    gen = torch.Generator().manual_seed(1)
    with_ref = pipe(
        ["a toy", "a toy in snow"],
        reference_images=refs,
        generator=gen,
        callback_on_step_end=record,
        callback_on_step_end_tensor_inputs=["reference_noise"],
        **kw,
    ).images
    hook.remove()
    check = DDIMScheduler.from_config(pipe.scheduler.config)
    check.set_timesteps(4)
    assert len(fed) == len(noises) == 4
    for x, (t, noise) in zip(fed, noises, strict=True):
        # Batch: the full branch's set [reference, 2 targets], then the null branch's 2 targets (drop).
        assert x.shape == (5, 9, 8, 8)
        assert torch.allclose(x[0, :4], check.add_noise(ref_latent, noise, t.reshape(1)), atol=1e-6)
        assert x[0, 4].eq(0).all() and x[1:, 4].eq(1).all()
        assert torch.equal(x[0, 5:], ref_latent) and all(torch.equal(row, empty) for row in x[1:, 5:])
    without = pipe(["a toy", "a toy in snow"], generator=torch.Generator().manual_seed(1), **kw).images
    other = pipe(
        ["a toy", "a toy in snow"], reference_images=[_image(6)], generator=torch.Generator().manual_seed(1), **kw
    ).images
    assert abs(with_ref - without).max() > 1e-3 and abs(with_ref - other).max() > 1e-4


def test_training_free_options_on_the_stock_model(pipe):
    """No coupled step is generation without references and without coupling; beta = -inf cuts the references
    off (the targets stay coupled with each other); the options change the targets where they couple."""
    prompts, kw = ["a toy", "a toy in snow"], {"num_inference_steps": 3, "output_type": "np", "guidance_scale": 3.0}

    def run(refs=None, **options):
        return pipe(prompts, reference_images=refs, generator=torch.Generator().manual_seed(2), **kw, **options).images

    alone, coupled = run(coupled_steps=1.0), run([_image(5)], coupled_steps=1.0)  # JeDi's coupling, every step
    assert abs(run([_image(5)], coupled_steps=0.0) - run(coupled_steps=0.0)).max() < 1e-5
    assert abs(run([_image(5)], reference_bias=-math.inf, coupled_steps=1.0) - alone).max() < 1e-5
    assert (run([_image(5)], reference_bias=0.0, coupled_steps=1.0) == coupled).all()  # JeDi's values change nothing
    # Otherwise the same code path, bit for bit: any difference is the option's (1 of 3 steps coupled).
    for options in ({"reference_bias": 2.0}, {"coupled_layers": ["up"]}, {"coupled_steps": 0.34}):
        assert abs(run([_image(5)], **{"coupled_steps": 1.0, **options}) - coupled).max() > 1e-5, options
    with pytest.raises(ValueError, match=r"'down\.5' matches no self-attention"):
        run([_image(5)], coupled_layers="down,down.5")
    with pytest.raises(ValueError, match="unknown coupled layer"):
        run([_image(5)], coupled_layers=["left"])


def test_a_stock_inpainting_model_couples_the_first_half_of_the_steps_by_default(pipe):
    """The stock layout's default (chosen in benchmarks/training_free.md): coupled in ceil(0.5 S) of S steps, so the
    default call is the explicit ``coupled_steps=0.5`` call and differs from JeDi's every-step coupling; a JeDi
    model keeps JeDi's coupled attention."""
    from jointdiff.jedi.coupling import DEFAULT_COUPLING, STOCK_INPAINTING_COUPLING, Coupling, default_for

    assert default_for("inpainting") == STOCK_INPAINTING_COUPLING == Coupling(steps=0.5)
    assert default_for("jedi") == DEFAULT_COUPLING == Coupling()
    prompts, kw = ["a toy", "a toy in snow"], {"num_inference_steps": 4, "output_type": "np", "guidance_scale": 3.0}

    def run(**options):
        gen = torch.Generator().manual_seed(3)
        return pipe(prompts, reference_images=[_image(5)], generator=gen, **kw, **options).images

    default = run()
    assert (default == run(coupled_steps=0.5)).all()
    assert abs(default - run(coupled_steps=1.0)).max() > 1e-5 and abs(default - run(coupled_steps=0.25)).max() > 1e-5


def test_from_pretrained_recognises_forces_and_keeps_the_layout(inpainting_dir, tmp_path):
    loaded = JointDiffusionPipeline.from_pretrained(inpainting_dir)
    assert loaded.config.layout == "inpainting" and loaded.joint_unet.layout.kind == "inpainting"
    assert JointDiffusionPipeline.from_pretrained(inpainting_dir, layout="jedi").joint_unet.layout == JointLayout(4)
    loaded.save_pretrained(tmp_path / "saved")  # a jointdiff pipeline over the unconverted stock U-Net
    assert json.loads((tmp_path / "saved" / "model_index.json").read_text())["layout"] == "inpainting"
    assert JointDiffusionPipeline.from_pretrained(tmp_path / "saved").joint_unet.layout.kind == "inpainting"
    forced = JointDiffusionPipeline.from_pretrained(inpainting_dir, layout="jedi")
    forced.save_pretrained(tmp_path / "forced")
    assert JointDiffusionPipeline.from_pretrained(tmp_path / "forced").joint_unet.layout.kind == "jedi"  # as forced
    with pytest.raises(ValueError, match="not supported when loading a stock model"):
        JointDiffusionPipeline.from_pretrained(inpainting_dir, device_map="auto")
    save_tiny_base(tmp_path / "t2i")
    with pytest.raises(ValueError, match=r"not reference-conditioned.*jointdiff convert"):
        JointDiffusionPipeline.from_pretrained(tmp_path / "t2i")


def test_convert_refuses_a_stock_inpainting_unet_and_says_it_needs_none(_inpainting):
    from jointdiff.jedi.model import convert_unet

    unet = copy.deepcopy(_inpainting["unet"])
    assert isinstance(unet, UNet2DConditionModel)
    with pytest.raises(ValueError, match="needs no conversion"):
        convert_unet(unet)


def test_spatial_masks_feed_a_stock_inpainting_input_and_agree_with_the_slot_bits(_inpainting):
    """known_pixels: the mask channel is 1 - known_pixels and the masked image blends the reference with the empty
    latent by it (a stock inpainting model's input for a region); all ones / all zeros give exactly the slot bits."""
    unet = copy.deepcopy(_inpainting["unet"])
    model = JointUNet.with_joint_attention(unet)
    x, ref, emb, empty = randn(1, 2, 4, 8, 8), randn(1, 2, 4, 8, 8, seed=3), text(1, 2), randn(4, 8, 8, seed=5)
    region = torch.zeros(1, 2, 1, 8, 8)
    region[0, 0, :, 2:6, 1:5] = 1.0  # slot 0: a box to paint; slot 1 all known
    seen = []
    hook = unet.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    nothing = torch.zeros(1, 2, dtype=torch.bool)
    with torch.no_grad():
        model(x, 10, emb, ref, nothing, empty=empty, known_pixels=1 - region)
        bits = model(x, 10, emb, ref, torch.tensor([[False, True]]), empty=empty)
        same = model(
            x, 10, emb, ref, nothing, empty=empty, known_pixels=torch.cat([region[:, :1] * 0 + 0, 1 - region[:, 1:]], 1)
        )
    hook.remove()
    fed = seen[0]  # (2, 9, 8, 8)
    assert torch.equal(fed[0, 4:5], region[0, 0]) and fed[1, 4].eq(0).all()
    inside, outside = region[0, 0, 0].bool(), ~region[0, 0, 0].bool()
    assert torch.equal(fed[0, 5:][:, inside], empty[:, inside]) and torch.equal(
        fed[0, 5:][:, outside], ref[0, 0][:, outside]
    )
    assert torch.equal(fed[1, 5:], ref[0, 1])
    assert torch.allclose(same, bits, atol=1e-6)  # slot 0 all unknown, slot 1 all known = the slot bits
    with pytest.raises(ValueError, match=r"known_pixels must be \(1, 2, 1, 8, 8\)"):
        model(x, 10, emb, ref, nothing, empty=empty, known_pixels=region[:, :, :, :4])


def test_draw_regions_as_stock_inpainting_training_draws_them():
    from jointdiff.training.objective import draw_regions

    g = torch.Generator().manual_seed(0)
    masks = draw_regions(2000, 16, 16, 0.25, g)
    full = masks.flatten(1).all(dim=1)
    assert masks.shape == (2000, 1, 16, 16) and set(masks.unique().tolist()) == {0.0, 1.0}
    assert abs(full.float().mean().item() - 0.25) < 0.03  # a quarter masked whole (binomial sd 0.01)
    partial = masks[~full].flatten(1).mean(dim=1)
    assert partial.min() >= (4 * 4) / 256 - 1e-6 and partial.max() < 1.0  # at least one 4x4 box, never all
    assert torch.equal(
        draw_regions(5, 16, 16, 0.25, torch.Generator().manual_seed(1)),
        draw_regions(5, 16, 16, 0.25, torch.Generator().manual_seed(1)),
    )


def test_regions_objective_trains_a_stock_inpainting_unet(_inpainting):
    """masks = regions: no slot is a whole reference, the model sees each image's region and the empty latent, every
    image counts in the loss, and the U-Net gets gradients; masks = images draws exactly as before."""
    from diffusers import DDPMScheduler

    from jointdiff.training.objective import JediObjective

    model = JointUNet.with_joint_attention(copy.deepcopy(_inpainting["unet"])).train()
    x0, emb, null, empty = randn(3, 1, 4, 8, 8), text(3, 1), text(1, 1)[0, 0], randn(4, 8, 8, seed=5)
    sched = DDPMScheduler(num_train_timesteps=1000)
    seen = []
    hook = model.unet.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    out = JediObjective(masks="regions", full_mask_probability=0.0, reference_dropout=0.0)(
        model, sched, x0, emb, null, generator=gens, empty=empty
    )
    hook.remove()
    out.loss.backward()
    assert not out.known.any() and out.weights.eq(1).all()
    mask = seen[0][:, 4]  # (3, 8, 8): the regions, each a proper part of the image
    assert all(0 < m.mean() < 1 for m in mask)
    assert model.unet.conv_in.weight.grad.abs().sum() > 0
    images = JediObjective()
    a = images.draw_per_set(
        torch.ones(3, 1, dtype=torch.bool), x0, 1000, [torch.Generator().manual_seed(i) for i in range(3)]
    )
    b = JediObjective(masks="regions").draw_per_set(
        torch.ones(3, 1, dtype=torch.bool), x0, 1000, [torch.Generator().manual_seed(i) for i in range(3)]
    )
    assert a.regions is None and torch.equal(a.noise, b.noise) and torch.equal(a.timesteps, b.timesteps)
    with pytest.raises(ValueError, match="masks: must be images or regions"):
        JediObjective(masks="strokes")


def test_inpainting_base_is_a_stock_layout_beside_the_miniatures_parts(tmp_path):
    """`jointdiff miniature inpainting-base`: the source's VAE and text encoder, a fresh U-Net read as a stock
    inpainting model (no jointdiff layout recorded), loadable and trainable by the same code."""
    from jointdiff.cli import main
    from jointdiff.jedi.convert import convert_pipeline

    save_tiny_base(tmp_path / "base")
    convert_pipeline(str(tmp_path / "base"), tmp_path / "jedi")
    assert main(["miniature", "inpainting-base", "--model", str(tmp_path / "jedi"), "--out", str(tmp_path / "ip")]) == 0
    src = JointDiffusionPipeline.from_pretrained(tmp_path / "jedi")
    ip = JointDiffusionPipeline.from_pretrained(tmp_path / "ip")
    assert ip.joint_unet.layout == InpaintingLayout(4) and LAYOUT_KEY not in ip.unet.config
    for name in ("vae", "text_encoder"):
        a, b = getattr(src, name).state_dict(), getattr(ip, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    shape = {k: v for k, v in src.unet.config.items() if not k.startswith("_") and k != "in_channels"}
    assert {k: ip.unet.config[k] for k in shape} == shape and ip.unet.config.in_channels == 9
    ip.set_progress_bar_config(disable=True)
    out = ip(["a toy"], reference_images=[_image(1)], num_inference_steps=1, output_type="np").images
    assert out.shape == (1, 16, 16, 3)
