import copy

import pytest
import torch
from conftest import randn, text

from jointdiff.jedi.attention import remove_joint_attention
from jointdiff.jedi.layouts import LAYOUT_KEY, JointLayout, joint_layout
from jointdiff.jedi.model import JointUNet, SetBatch, convert_unet


def test_convert_widens_conv_in_with_zero_weights_and_records_layout(unet):
    old_w, old_b = unet.conv_in.weight.detach().clone(), unet.conv_in.bias.detach().clone()
    convert_unet(unet)
    w = unet.conv_in.weight
    assert w.shape[1] == 9 and unet.config.in_channels == 9
    assert torch.equal(w[:, 1:5], old_w) and torch.equal(unet.conv_in.bias, old_b)
    assert not w[:, :1].any() and not w[:, 5:].any()
    assert joint_layout(unet) == JointLayout(latent_channels=4)
    assert unet.config[LAYOUT_KEY]["channels"] == ["mask", "noisy", "reference"]


def test_converted_unet_reproduces_original_for_any_mask_and_reference(components):
    unet = components["unet"].eval()
    x, emb, t = randn(3, 4, 8, 8), randn(3, 5, 16, seed=1), torch.tensor([1, 400, 999])
    with torch.no_grad():
        before = unet(x, t, emb).sample
        convert_unet(unet)
        extra = torch.cat([torch.bernoulli(torch.full((3, 1, 8, 8), 0.5)), x, randn(3, 4, 8, 8, seed=2)], 1)
        after = unet(extra, t, emb).sample
    assert torch.allclose(after, before, atol=1e-5)


def test_convert_rejects_converted_and_conditioned_unets(unet):
    convert_unet(unet)
    with pytest.raises(ValueError, match="already converted"):
        convert_unet(unet)
    from diffusers import UNet2DConditionModel

    inpaint = UNet2DConditionModel(**{**dict(unet.config), "in_channels": 9, LAYOUT_KEY: None})
    with pytest.raises(ValueError, match="not a plain text-to-image U-Net"):
        convert_unet(inpaint)
    with pytest.raises(ValueError, match="UNet2DConditionModel-like"):
        convert_unet(torch.nn.Linear(2, 2))


def test_joint_unet_with_sets_of_one_and_no_references_equals_original(components):
    original = components["unet"].eval()
    x, emb = randn(2, 4, 8, 8), randn(2, 5, 16, seed=1)
    with torch.no_grad():
        expected = original(x, torch.tensor([20, 700]), emb).sample
        model = JointUNet.with_joint_attention(convert_unet(original))
        out = model(x[:, None], torch.tensor([20, 700]), emb[:, None])
    assert out.shape == (2, 1, 4, 8, 8)
    assert torch.allclose(out[:, 0], expected, atol=1e-5)


def test_reference_is_read_only_in_known_slots(joint_unet):
    with torch.no_grad():
        joint_unet.conv_in.weight[:, 5:] = randn(*joint_unet.conv_in.weight[:, 5:].shape, seed=3) * 0.1
    model = JointUNet.with_joint_attention(joint_unet)
    x, emb = randn(1, 3, 4, 8, 8), text(1, 3)
    ref_a, ref_b = randn(1, 3, 4, 8, 8, seed=4), randn(1, 3, 4, 8, 8, seed=5)
    unknown = torch.zeros(1, 3, dtype=torch.bool)
    with torch.no_grad():
        # Unknown slots: the reference content is masked out entirely.
        assert torch.equal(model(x, 10, emb, ref_a, unknown), model(x, 10, emb, ref_b, unknown))
        assert torch.allclose(model(x, 10, emb, ref_a, unknown), model(x, 10, emb), atol=0)
        # A known slot's reference reaches every image of its set through coupled attention.
        known = torch.tensor([[True, False, False]])
        a, b = model(x, 10, emb, ref_a, known), model(x, 10, emb, ref_b, known)
    assert (a[0, 2] - b[0, 2]).abs().max() > 1e-5


def test_timestep_forms_are_equivalent(joint_unet):
    model = JointUNet.with_joint_attention(joint_unet)
    x, emb = randn(2, 2, 4, 8, 8), text(2, 2)
    with torch.no_grad():
        scalar = model(x, 250, emb)
        per_set = model(x, torch.tensor([250, 250]), emb)
        per_image = model(x, torch.full((2, 2), 250), emb)
    assert torch.equal(scalar, per_set) and torch.equal(scalar, per_image)


def test_forward_groups_equals_one_forward_per_group(joint_unet):
    """Sets of different sizes in one U-Net call give what separate calls give (JointUNet.forward_groups)."""
    with torch.no_grad():
        joint_unet.conv_in.weight[:, 5:] = randn(*joint_unet.conv_in.weight[:, 5:].shape, seed=3) * 0.1
    model = JointUNet.with_joint_attention(joint_unet)
    big = SetBatch(randn(2, 3, 4, 8, 8), torch.tensor([100, 700]), text(2, 3), randn(2, 3, 4, 8, 8, seed=2))
    big.known = torch.tensor([[True, False, False], [False, True, False]])
    small = SetBatch(randn(3, 2, 4, 8, 8, seed=4), 400, text(3, 2, seed=5))
    single = SetBatch(randn(1, 1, 4, 8, 8, seed=6), 900, text(1, 1, seed=7))
    with torch.no_grad():
        together = model.forward_groups([big, small, single])
        alone = [
            model(g.sample, g.timestep, g.encoder_hidden_states, g.reference, g.known) for g in (big, small, single)
        ]
    assert [tuple(e.shape) for e in together] == [(2, 3, 4, 8, 8), (3, 2, 4, 8, 8), (1, 1, 4, 8, 8)]
    for a, b in zip(together, alone, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="slot_mask is supported with one group only"):
        model.forward_groups([SetBatch(big.sample, 1, big.encoder_hidden_states, slot_mask=big.known), small])


def test_joint_unet_rejects_bad_inputs(components):
    plain = components["unet"]
    model = JointUNet.with_joint_attention(convert_unet(copy.deepcopy(plain)))
    x, emb = randn(2, 2, 4, 8, 8), text(2, 2)
    with pytest.raises(ValueError, match=r"sample must be \(B, N, 4, H, W\)"):
        model(x[0], 1, emb)
    with pytest.raises(ValueError, match="encoder_hidden_states must be"):
        model(x, 1, emb[:, :1])
    with pytest.raises(ValueError, match="without `known`"):
        model(x, 1, emb, reference=x)
    with pytest.raises(ValueError, match="no reference latents"):
        model(x, 1, emb, known=torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="timestep must be"):
        model(x, torch.ones(3), emb)
    with pytest.raises(ValueError, match="not reference-conditioned"):
        JointUNet(plain)


def test_converted_unet_round_trips_through_save_pretrained(joint_unet, tmp_path):
    from diffusers import UNet2DConditionModel

    model = JointUNet.with_joint_attention(joint_unet)
    joint_unet.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = UNet2DConditionModel.from_pretrained(tmp_path).eval()
    assert joint_layout(loaded) == model.layout
    reloaded = JointUNet.with_joint_attention(loaded)
    x, emb, known = randn(1, 3, 4, 8, 8), text(1, 3), torch.tensor([[True, False, False]])
    with torch.no_grad():
        assert torch.equal(reloaded(x, 5, emb, x, known), model(x, 5, emb, x, known))
        remove_joint_attention(loaded)
        assert not torch.equal(reloaded(x, 5, emb, x, known), model(x, 5, emb, x, known))


def test_constructing_the_adapter_leaves_the_unet_alone(joint_unet):
    """Coupling is an explicit call: JointUNet(unet) only checks the layout; install_attention couples."""
    from jointdiff.jedi.attention import CoupledAttnProcessor, has_joint_attention

    before = dict(joint_unet.attn_processors)
    model = JointUNet(joint_unet)
    assert dict(joint_unet.attn_processors) == before and not has_joint_attention(joint_unet)
    assert model.install_attention() is model and has_joint_attention(joint_unet)
    coupled = [p for n, p in joint_unet.attn_processors.items() if n.endswith("attn1.processor")]
    assert coupled and all(isinstance(p, CoupledAttnProcessor) for p in coupled)
