import copy

import numpy as np
import PIL.Image
import pytest
import torch
from conftest import randn
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, StableDiffusionPipeline

from jointdiff.jedi.guidance import FULL, IMAGE, NULL, STRATEGIES, Guidance
from jointdiff.jedi.model import convert_unet
from jointdiff.jedi.pipeline import JointDiffusionPipeline
from jointdiff.jedi.sampling import GuidedSetDenoiser, SetConditioning, replacement_sample
from jointdiff.jedi.t2i import TextToImage, sample


def _g(strategy: str, **kw) -> Guidance:
    """Text scale 4, image scale 2.5 where the strategy has one (eq. 4)."""
    return Guidance(strategy, 4.0, 2.5 if STRATEGIES[strategy].two_scales else None, **kw)


@pytest.fixture
def pipe(components):
    c = copy.deepcopy(components)
    convert_unet(c["unet"])
    p = JointDiffusionPipeline(**c)
    p.set_progress_bar_config(disable=True)
    return p


def _image(seed: int, size: int = 16) -> PIL.Image.Image:
    g = torch.Generator().manual_seed(seed)
    return PIL.Image.fromarray((torch.rand(size, size, 3, generator=g) * 255).byte().numpy())


def test_parity_with_stable_diffusion_pipeline_without_references(components, pipe):
    sd = StableDiffusionPipeline(
        **copy.deepcopy(components), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    sd.set_progress_bar_config(disable=True)
    for steps, scale in ((6, 7.5), (3, 1.0)):
        kw = {"num_inference_steps": steps, "guidance_scale": scale, "output_type": "np", "num_images_per_prompt": 2}
        a = sd("a red toy", generator=torch.Generator().manual_seed(3), **kw).images
        b = pipe("a red toy", generator=torch.Generator().manual_seed(3), **kw).images
        assert a.shape == b.shape == (2, 16, 16, 3)
        assert abs(a - b).max() < 1e-4


@pytest.mark.parametrize("converted", [False, True])
def test_text_to_image_sampler_matches_stable_diffusion_pipeline(components, converted):
    """The text-to-image path is the replacement loop with no references: diffusers' SD pipeline, same latents."""
    sd = StableDiffusionPipeline(
        **copy.deepcopy(components), safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    sd.set_progress_bar_config(disable=True)
    c = copy.deepcopy(components)
    if converted:  # a jointdiff model used without references: each image a set of one
        convert_unet(c["unet"])
    model = TextToImage(**c)
    prompts = ["a red toy", "a toy in the snow"]
    for steps, scale in ((6, 7.5), (3, 2.0)):
        expected = sd(
            prompts,
            num_inference_steps=steps,
            guidance_scale=scale,
            output_type="latent",
            generator=torch.Generator().manual_seed(5),
        ).images
        got = sample(model, prompts, torch.Generator().manual_seed(5), num_inference_steps=steps, guidance_scale=scale)
        assert got.shape == expected.shape == (2, 4, 8, 8)
        assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_pipeline_and_text_to_image_share_one_latent_space_with_shift(components):
    """VAE latents are (z - shift_factor) * scaling_factor on every path, and decoding inverts exactly that."""
    from jointdiff.jedi.encoding import decode_latents

    c = copy.deepcopy(components)
    c["vae"].register_to_config(shift_factor=0.3)
    convert_unet(c["unet"])
    pipe, model = JointDiffusionPipeline(**c), TextToImage(**c)
    images = [_image(1), _image(2)]
    via_pipeline = pipe.encode_references(images, 16, 16, torch.device("cpu"))
    via_t2i = model.encode_images(images)
    pixels = pipe.image_processor.preprocess(images, height=16, width=16)
    with torch.no_grad():
        raw = c["vae"].encode(pixels).latent_dist.mode()
        expected = (raw - 0.3) * c["vae"].config.scaling_factor
        assert torch.allclose(via_pipeline, expected, atol=1e-6) and torch.allclose(via_t2i, expected, atol=1e-6)
        assert torch.allclose(decode_latents(c["vae"], expected), c["vae"].decode(raw).sample, atol=1e-5)


@pytest.mark.parametrize("scheduler_cls", [DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler])
def test_known_slots_equal_forward_diffusion_of_references_every_step(pipe, scheduler_cls):
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    refs = [_image(1), _image(2)]
    ref_latents = pipe.encode_references(refs, 16, 16, torch.device("cpu"))  # (n, C, h, w)
    seen, fed = [], []
    original = pipe.joint_unet.forward_groups

    def spy(groups, *args, **kwargs):
        # The whole set is the first group (the reference-free branches see the 2 targets alone).
        assert groups[0].sample.shape[1] == 4
        fed.append(groups[0].sample[:, :2].clone())  # reference slots as the U-Net sees them
        return original(groups, *args, **kwargs)

    pipe.joint_unet.forward_groups = spy

    def record(_pipe, i, t, tensors):
        seen.append((t, tensors["set_latents"][:, :2].clone(), tensors["reference_noise"].clone()))

    out = pipe(
        ["a toy", "a toy in snow"],
        reference_images=refs,
        num_inference_steps=4,
        generator=torch.Generator().manual_seed(0),
        callback_on_step_end=record,
        callback_on_step_end_tensor_inputs=["set_latents", "reference_noise"],
        output_type="latent",
    ).images
    assert out.shape == (2, 4, 8, 8) and len(seen) == len(fed) == 4
    check = scheduler_cls.from_config(pipe.scheduler.config)
    check.set_timesteps(4)
    for (t, known, noise), model_in in zip(seen, fed, strict=True):
        expected = check.add_noise(ref_latents, noise[0], t.reshape(1))
        assert torch.allclose(known[0], expected, atol=1e-6)
        # Every guidance branch with the references sees the same scaled reference slots.
        scaled = check.scale_model_input(expected, t)
        assert all(torch.allclose(m, scaled, atol=1e-5) for m in model_in)
        check.step(torch.zeros(2, 4, 8, 8), t, torch.zeros(2, 4, 8, 8))  # advance step index like the loop


def test_replacement_loop_keeps_only_target_updates():
    sched = DDIMScheduler()
    sched.set_timesteps(3)
    refs, latents = randn(1, 2, 4, 8, 8, seed=1), randn(1, 1, 4, 8, 8, seed=2)
    calls = []

    def denoise(x, t):
        calls.append(x.shape)
        return torch.zeros_like(x).index_fill_(1, torch.tensor([0, 1]), 1e6)  # garbage on known slots only

    out = replacement_sample(denoise, sched, sched.timesteps, latents, refs, generator=torch.Generator())
    assert calls == [torch.Size([1, 3, 4, 8, 8])] * 3
    assert torch.isfinite(out).all() and out.abs().max() < 100  # the huge known-slot eps never reached a target


def test_determinism_and_seed_dependence(pipe):
    kw = {"reference_images": [_image(5)], "num_inference_steps": 3, "output_type": "np"}
    a = pipe(["a toy"], generator=torch.Generator().manual_seed(1), **kw).images
    b = pipe(["a toy"], generator=torch.Generator().manual_seed(1), **kw).images
    c = pipe(["a toy"], generator=torch.Generator().manual_seed(2), **kw).images
    assert (a == b).all() and abs(a - c).max() > 1e-3


def test_references_change_targets_and_null_reference_modes_differ(pipe):
    with torch.no_grad():
        pipe.unet.conv_in.weight[:, 5:] = randn(*pipe.unet.conv_in.weight[:, 5:].shape, seed=3) * 0.2
    kw = {"num_inference_steps": 3, "output_type": "np", "guidance_scale": 3.0}
    a = pipe("a toy", reference_images=[_image(5)], generator=torch.Generator().manual_seed(1), **kw).images
    b = pipe("a toy", reference_images=[_image(6)], generator=torch.Generator().manual_seed(1), **kw).images
    m = pipe(
        "a toy", reference_images=[_image(5)], null_reference="mask", generator=torch.Generator().manual_seed(1), **kw
    ).images
    assert abs(a - b).max() > 1e-4 and abs(a - m).max() > 1e-5


def test_isolated_references_change_only_sets_with_references(pipe):
    kw = {"num_inference_steps": 3, "output_type": "np", "guidance_scale": 3.0}

    def run(mode: str, refs: list) -> np.ndarray:
        gen = torch.Generator().manual_seed(1)
        return pipe(
            ["a toy", "a toy in snow"], reference_images=refs or None, reference_attention=mode, generator=gen, **kw
        ).images

    assert (run("joint", []) == run("isolated", [])).all()  # no references: nothing to isolate
    assert abs(run("joint", [_image(5)]) - run("isolated", [_image(5)])).max() > 1e-5
    with pytest.raises(ValueError, match="reference_attention must be one of"):
        pipe("a toy", reference_attention="shared", **kw)


def test_denoiser_batches_branches_and_drops_reference_slots_in_null_branch(joint_unet):
    from jointdiff.jedi.model import JointUNet

    model = JointUNet.with_joint_attention(joint_unet)
    cond = SetConditioning(
        text=randn(1, 3, 5, 16), null_text=randn(1, 3, 5, 16, seed=2), references=randn(1, 1, 4, 8, 8)
    )
    d = GuidedSetDenoiser(model, cond, Guidance("text_first", 5.0, 2.0, null_reference="drop"))
    assert d.branches == (NULL, IMAGE, FULL)
    assert d.whole == [IMAGE, FULL] and d.targets_only == [NULL]  # the null branch sees the 2 targets only
    assert d.known.tolist() == [[True, False, False], [True, False, False]]
    x = randn(1, 3, 4, 8, 8, seed=4)
    with torch.no_grad():
        eps = d(x, torch.tensor(500))
        # Branch by branch, by hand: the null branch equals the targets run as a set of their own.
        null_targets = model(x[:, 1:], 500, cond.null_text[:, 1:])
        img = model(
            x,
            500,
            cond.null_text,
            reference=torch.cat([cond.references, torch.zeros(1, 2, 4, 8, 8)], 1),
            known=torch.tensor([[True, False, False]]),
        )
        full = model(
            x,
            500,
            cond.text,
            reference=torch.cat([cond.references, torch.zeros(1, 2, 4, 8, 8)], 1),
            known=torch.tensor([[True, False, False]]),
        )
    expected = null_targets + 2.0 * (img[:, 1:] - null_targets) + 5.0 * (full[:, 1:] - img[:, 1:])
    assert torch.allclose(eps[:, 1:], expected, atol=1e-5)


def test_two_subjects_full_branch_sees_both_references_with_their_captions_null_branch_neither(joint_unet):
    """Issue 33: references of two subjects, each slot with its own caption; eq. 3's full branch is the whole set
    (both references known, each with its caption), its null branch the target alone (both references dropped)."""
    from jointdiff.jedi.model import JointUNet

    model = JointUNet.with_joint_attention(joint_unet)
    text = randn(1, 3, 5, 16)  # slot 0: "a dog", slot 1: "a teapot", slot 2: the target's prompt
    cond = SetConditioning(text=text, null_text=randn(1, 3, 5, 16, seed=2), references=randn(1, 2, 4, 8, 8, seed=3))
    d = GuidedSetDenoiser(model, cond, Guidance("joint", 5.0, null_reference="drop"))
    assert d.whole == [FULL] and d.targets_only == [NULL]
    assert d.known.tolist() == [[True, True, False]]
    x = randn(1, 3, 4, 8, 8, seed=4)
    with torch.no_grad():
        eps = d(x, torch.tensor(500))
        null = model(x[:, 2:], 500, cond.null_text[:, 2:])
        reference = torch.cat([cond.references, torch.zeros(1, 1, 4, 8, 8)], 1)
        full = model(x, 500, text, reference=reference, known=torch.tensor([[True, True, False]]))
        swapped = model(x, 500, text[:, [1, 0, 2]], reference=reference, known=torch.tensor([[True, True, False]]))
    assert torch.allclose(eps[:, 2:], null + 5.0 * (full[:, 2:] - null), atol=1e-5)
    assert not torch.allclose(full[:, 2:], swapped[:, 2:], atol=1e-4)  # which caption goes with which reference matters


@pytest.mark.parametrize("strategy", ["joint", "text_first", "image_first", "text_only"])
def test_targets_only_null_branches_equal_the_slot_masked_whole_set(joint_unet, strategy):
    """``drop``: reference-free branches on the K targets alone give what the whole set with the
    reference slots masked out of coupling gave (the earlier implementation), with fewer U-Net slots."""
    from jointdiff.jedi.model import JointUNet

    model = JointUNet.with_joint_attention(joint_unet)
    b, n, k = 2, 2, 3
    cond = SetConditioning(
        text=randn(b, n + k, 5, 16), null_text=randn(b, n + k, 5, 16, seed=2), references=randn(b, n, 4, 8, 8, seed=3)
    )
    x, t = randn(b, n + k, 4, 8, 8, seed=4), torch.tensor(700)
    seen: list[int] = []  # images per U-Net call
    hook = model.unet.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    with torch.no_grad():
        eps = GuidedSetDenoiser(model, cond, _g(strategy, null_reference="drop"))(x, t)
        hook.remove()
        parts = {}
        refs = torch.cat([cond.references, torch.zeros(b, k, 4, 8, 8)], 1)
        is_ref = torch.arange(n + k) < n
        for br in _g(strategy).branches():
            text = cond.text if br.text else cond.null_text
            if br.references:
                parts[br] = model(x, t, text, reference=refs, known=is_ref.expand(b, -1))
            else:  # the earlier way: every slot computed, reference slots excluded from coupling
                parts[br] = model(
                    x,
                    t,
                    text,
                    reference=refs,
                    known=torch.zeros(b, n + k, dtype=torch.bool),
                    slot_mask=(~is_ref).expand(b, -1),
                )
        expected = _g(strategy).combine(parts)
    assert torch.allclose(eps[:, n:], expected[:, n:], atol=1e-5)
    with_refs = sum(br.references for br in _g(strategy).branches())
    without = len(_g(strategy).branches()) - with_refs
    assert len(seen) == 1  # every branch in one U-Net call
    assert seen[0] == b * (n + k) * with_refs + b * k * without  # reference-free branches: K slots only


class _IsolatedByMask:
    """Test oracle for isolated references: whole-set attention (N*L tokens) with the first ``n``
    slots' queries blocked from the other slots' keys by an additive mask; sets of another size plain."""

    def __init__(self, n: int, set_n: int) -> None:
        self.n, self.set_n = n, set_n

    def __call__(self, attn, hidden_states, set_size=None, **_):
        from diffusers.models.attention_processor import AttnProcessor2_0

        bn, length, c = hidden_states.shape
        size = set_size or 1
        x = hidden_states.reshape(bn // size, size * length, c)  # (B*N, L, C) -> (B, N*L, C)
        slot = torch.arange(size * length) // length
        blocked = (slot[:, None] < self.n) & (slot[None, :] >= self.n) & (size == self.set_n)
        bias = torch.zeros(size * length, size * length).masked_fill(blocked, float("-inf"))
        out = AttnProcessor2_0()(attn, x, attention_mask=bias.expand(x.shape[0], -1, -1))
        return out.reshape(bn, length, c)


@pytest.mark.parametrize("strategy", ["joint", "text_first", "image_first", "text_only"])
def test_isolated_references_equal_whole_set_attention_with_reference_rows_masked(joint_unet, strategy):
    """``reference_attention="isolated"``: references computed once for every branch give what each
    branch computed on its whole set with the reference queries masked off the targets; one U-Net
    call of b*n + b*K*branches images."""
    from jointdiff.jedi.model import JointUNet

    model = JointUNet.with_joint_attention(joint_unet)
    b, n, k = 2, 2, 3
    cond = SetConditioning(
        text=randn(b, n + k, 5, 16), null_text=randn(b, n + k, 5, 16, seed=2), references=randn(b, n, 4, 8, 8, seed=3)
    )
    x, t = randn(b, n + k, 4, 8, 8, seed=4), torch.tensor(700)
    seen: list[int] = []
    hook = model.unet.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    with torch.no_grad():
        denoiser = GuidedSetDenoiser(model, cond, _g(strategy, null_reference="drop", reference_attention="isolated"))
        eps = denoiser(x, t)
        hook.remove()
        joint = GuidedSetDenoiser(model, cond, _g(strategy, null_reference="drop"))(x, t)
        model.unet.set_attn_processor(
            {
                name: _IsolatedByMask(n, n + k) if name.endswith("attn1.processor") else proc
                for name, proc in model.unet.attn_processors.items()
            }
        )
        parts = {}
        refs = torch.cat([cond.references, torch.zeros(b, k, 4, 8, 8)], 1)
        for br in _g(strategy).branches():
            text = cond.text if br.text else cond.null_text
            if br.references:  # the references keep their own captions in every branch
                text = torch.cat([cond.text[:, :n], text[:, n:]], 1)
                known = (torch.arange(n + k) < n).expand(b, -1)
                parts[br] = model(x, t, text, reference=refs, known=known)
            else:
                parts[br] = torch.cat([torch.zeros(b, n, 4, 8, 8), model(x[:, n:], t, text[:, n:])], 1)
        expected = _g(strategy).combine(parts)
    assert torch.allclose(eps[:, n:], expected[:, n:], atol=1e-5)
    assert (eps[:, n:] - joint[:, n:]).abs().max() > 1e-4  # isolation changes what the targets see
    branches = len(_g(strategy).branches())
    assert seen == [b * n + b * k * branches]  # the references once, each branch's K targets
    assert denoiser.seeing == [br for br in _g(strategy).branches() if br.references]


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_sets_with_their_own_prompts_and_generators_equal_the_sets_made_alone(pipe, eta):
    """``prompt`` as B lists and one generator per set: each set as if generated alone (same noise)."""
    refs, sets = [_image(1)], [["a toy", "a toy in snow"], ["a toy on a beach", "a red toy"]]
    kw = {"reference_images": refs, "num_inference_steps": 3, "eta": eta, "output_type": "latent"}
    batch = pipe(sets, generator=[torch.Generator().manual_seed(s) for s in (5, 6)], **kw).images  # (B*K, ...)
    for i, (prompts, s) in enumerate(zip(sets, (5, 6), strict=True)):
        alone = pipe(prompts, generator=torch.Generator().manual_seed(s), **kw).images  # (K, ...)
        assert torch.allclose(batch[2 * i : 2 * i + 2], alone, atol=1e-5)
    with pytest.raises(ValueError, match="same number of prompts"):
        pipe([["a"], ["b", "c"]])
    with pytest.raises(ValueError, match="a list of 2 \\(one per set\\)"):
        pipe(sets, generator=[torch.Generator()])
    with pytest.raises(ValueError, match="num_images_per_prompt must be 1"):
        pipe(sets, num_images_per_prompt=2)


def test_pipeline_rejects_bad_arguments(pipe):
    with pytest.raises(ValueError, match="positive integer"):
        pipe("a toy", num_inference_steps=0)
    with pytest.raises(ValueError, match=">= 0"):
        pipe("a toy", guidance_scale=-1.0)
    with pytest.raises(ValueError, match="reference prompts for 1 reference"):
        pipe("a toy", reference_images=[_image(1)], reference_prompts=["a", "b"])
    with pytest.raises(ValueError, match="latents must have shape"):
        pipe(["a", "b"], latents=torch.zeros(1, 1, 4, 8, 8), num_inference_steps=1)
    with pytest.raises(ValueError, match="one scale"):
        pipe("a toy", guidance="joint", image_guidance_scale=3.0)


def test_pipeline_saves_and_loads_with_a_swapped_scheduler(pipe, tmp_path):
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.save_pretrained(tmp_path)
    loaded = JointDiffusionPipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.scheduler, EulerDiscreteScheduler)
    kw = {"reference_images": [_image(5)], "num_inference_steps": 3, "output_type": "np"}
    a = pipe(["a toy", "a cup"], generator=torch.Generator().manual_seed(1), **kw).images
    b = loaded(["a toy", "a cup"], generator=torch.Generator().manual_seed(1), **kw).images
    assert abs(a - b).max() < 1e-5


def test_attention_that_would_uncouple_the_set_is_refused(pipe):
    """diffusers' attention slicing and xformers would swap the coupled processors for per-image ones (the images
    would stop seeing each other, with only a log line to say so): both are refused, and a call whose U-Net lost
    its coupled attention some other way fails before any work."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    with pytest.raises(ValueError, match="attention slicing would replace JeDi's coupled self-attention"):
        pipe.enable_attention_slicing()
    with pytest.raises(ValueError, match="xformers attention would replace"):
        pipe.enable_xformers_memory_efficient_attention()
    pipe.disable_attention_slicing()  # nothing to undo, no error
    kw = {"reference_images": [_image(5)], "num_inference_steps": 2, "output_type": "np"}
    assert pipe(["a toy"], generator=torch.Generator().manual_seed(0), **kw).images.shape == (1, 16, 16, 3)
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    with pytest.raises(ValueError, match="coupled self-attention was replaced"):
        pipe(["a toy"], **kw)


def test_num_timesteps_and_a_callback_that_zeroes_the_last_latents(pipe):
    """diffusers' callback contract: ``pipe.num_timesteps`` is readable inside the callback, and the ``latents``
    the callback returns on the last step are what gets decoded."""
    seen = []

    def zero_last(p, i, t, tensors):
        seen.append(p.num_timesteps)
        return {"latents": torch.zeros_like(tensors["latents"])} if i == p.num_timesteps - 1 else tensors

    out = pipe(["a toy", "a cup"], num_inference_steps=3, output_type="latent", callback_on_step_end=zero_last)
    assert seen == [3, 3, 3] and pipe.num_timesteps == 3
    assert out.images.abs().max() == 0


def test_refusals_say_what_to_do_instead(pipe, tmp_path):
    """The deliberate differences from a stock diffusers pipeline refuse in one line that says what to do: pickled
    weights (safetensors-only loading) and a list of generators for what is one coupled set."""
    with pytest.raises(ValueError, match=r"a list of prompts is one coupled set: for independent sets pass a list"):
        pipe(["a toy", "a cup"], num_inference_steps=1, generator=[torch.Generator(), torch.Generator()])
    pipe.save_pretrained(tmp_path, safe_serialization=False)
    with pytest.raises(ValueError, match=r"no safetensors weights .* pass use_safetensors=None") as info:
        JointDiffusionPipeline.from_pretrained(tmp_path)
    assert "\n" not in str(info.value)
    loaded = JointDiffusionPipeline.from_pretrained(tmp_path, use_safetensors=None)
    assert isinstance(loaded, JointDiffusionPipeline)


def test_from_pretrained_takes_dtype_by_either_name_without_a_warning(pipe, tmp_path):
    import warnings

    pipe.save_pretrained(tmp_path / "m")
    for name in ("dtype", "torch_dtype"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", FutureWarning)  # diffusers' deprecation of torch_dtype must not show
            loaded = JointDiffusionPipeline.from_pretrained(tmp_path / "m", **{name: torch.bfloat16})
        assert loaded.unet.dtype == torch.bfloat16 and loaded.text_encoder.dtype == torch.bfloat16


def test_guidance_interval_guides_its_steps_and_takes_the_full_branch_alone_elsewhere(joint_unet):
    """Issue 27: with ``start`` / ``stop`` the guided steps give what guidance everywhere gives, the others the
    full branch alone, in a U-Net call of the full branch only (one branch: cheaper)."""
    from jointdiff.jedi.model import JointUNet

    model = JointUNet.with_joint_attention(joint_unet)
    cond = SetConditioning(
        text=randn(1, 3, 5, 16), null_text=randn(1, 3, 5, 16, seed=2), references=randn(1, 1, 4, 8, 8, seed=3)
    )
    x = randn(1, 3, 4, 8, 8, seed=4)
    timesteps = torch.tensor([900, 700, 500, 300, 100])  # start 0.2, stop 0.8 of 5 steps: steps 1 to 3 guided
    limited = GuidedSetDenoiser(model, cond, Guidance("joint", 5.0, start=0.2, stop=0.8), timesteps=timesteps)
    everywhere = GuidedSetDenoiser(model, cond, Guidance("joint", 5.0))
    unguided = GuidedSetDenoiser(model, cond, Guidance("joint", 1.0))
    seen: list[int] = []  # images per U-Net call
    hook = model.unet.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    with torch.no_grad():
        for t, guided in zip(timesteps, (False, True, True, True, False), strict=True):
            seen.clear()
            eps = limited(x, t)
            assert seen == ([3 + 2] if guided else [3])  # full set + the null branch's targets, or the full set only
            expected = everywhere(x, t) if guided else unguided(x, t)
            assert torch.allclose(eps, expected, atol=1e-6)
    hook.remove()
    with pytest.raises(ValueError, match="guidance interval needs the sampler's timesteps"):
        GuidedSetDenoiser(model, cond, Guidance("joint", 5.0, stop=0.5))


def test_pipeline_takes_guidance_rescale_and_interval(pipe):
    """The pipeline's new guidance options are off by default (the default run is unchanged), change the images
    when set, and reject bad values with one line."""
    kw = {"num_inference_steps": 4, "output_type": "np", "reference_images": [_image(5)]}

    def run(**options) -> np.ndarray:
        return pipe(["a toy", "a toy in snow"], generator=torch.Generator().manual_seed(1), **kw, **options).images

    default = run()
    assert (run(guidance_rescale=0.0, guidance_start=0.0, guidance_stop=1.0) == default).all()
    assert abs(run(guidance_rescale=0.7) - default).max() > 1e-5
    assert abs(run(guidance_start=0.5) - default).max() > 1e-5
    with pytest.raises(ValueError, match="guidance interval needs"):
        pipe("a toy", guidance_start=0.9, guidance_stop=0.1, **kw)


def test_pipeline_region_bias_binds_references_of_two_subjects_to_columns(pipe):
    """Issue 33: with references of two subjects the region bias changes the targets; with one reference it changes
    nothing (one reference owns the whole image); non-square images and isolated references are refused."""
    kw = {"num_inference_steps": 3, "output_type": "np"}

    def run(refs: list, **options) -> np.ndarray:
        gen = torch.Generator().manual_seed(2)
        return pipe(["a dog and a teapot"], reference_images=refs, generator=gen, **kw, **options).images

    two = [_image(5), _image(6)]
    assert abs(run(two, region_bias=4.0) - run(two)).max() > 1e-5
    assert (run(two, region_bias=0.0) == run(two)).all()
    assert (run([_image(5)], region_bias=4.0) == run([_image(5)])).all()
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    with pytest.raises(ValueError, match="needs square images"):
        pipe("a toy", reference_images=two, region_bias=1.0, height=size, width=2 * size, **kw)
    with pytest.raises(ValueError, match="joint reference attention"):
        pipe("a toy", reference_images=two, region_bias=1.0, reference_attention="isolated", **kw)
