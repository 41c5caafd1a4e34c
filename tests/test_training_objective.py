"""The JeDi objective (eq. 2): the loss equals the epsilon-MSE of the model's inputs, masks and dropout hold."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler
from torch import nn

from jointdiff.jedi.model import JointUNet
from jointdiff.training.objective import JediObjective, draw_known


class Recorder(nn.Module):
    """A stand-in model: records its inputs and returns a fixed prediction."""

    def __init__(self, pred: torch.Tensor) -> None:
        super().__init__()
        self.pred, self.calls = pred, []

    def forward(self, sample, timestep, text, reference=None, known=None, slot_mask=None):
        self.calls.append(
            {"x_t": sample, "t": timestep, "text": text, "reference": reference, "known": known, "slot_mask": slot_mask}
        )
        return self.pred


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def setup(b=6, n=3, seed=0):
    x0 = torch.randn(b, n, 4, 2, 2, generator=g(seed))
    text = torch.randn(b, n, 5, 8, generator=g(seed + 1))
    null = torch.randn(5, 8, generator=g(seed + 2))
    pred = torch.randn(b, n, 4, 2, 2, generator=g(seed + 3))
    return x0, text, null, pred


@pytest.mark.parametrize("unknown_only", [False, True])
def test_loss_is_eps_mse_of_the_model_inputs(unknown_only):
    """Recover eps from x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps and recompute eq. 2 by hand."""
    sched = DDPMScheduler(num_train_timesteps=1000)
    x0, text, null, pred = setup()
    model = Recorder(pred)
    out = JediObjective(unknown_only=unknown_only)(model, sched, x0, text, null, generator=g(7))
    call = model.calls[0]
    a = sched.alphas_cumprod[call["t"]][:, None, None, None, None]  # (B, 1, 1, 1, 1): one t per set
    eps = (call["x_t"] - a.sqrt() * x0) / (1 - a).sqrt()
    per_slot = (pred - eps).pow(2).mean(dim=(2, 3, 4))  # (B, N)
    w = (~out.known).float() if unknown_only else torch.ones_like(per_slot)
    assert torch.allclose(out.loss, (per_slot * w).sum() / w.sum(), rtol=1e-4, atol=1e-5)
    assert torch.equal(call["known"], out.known) and torch.equal(call["reference"], x0)
    assert bool((~out.known).any(dim=1).all())  # every set has an image to generate
    assert call["t"].shape == (6,) and int(call["t"].min()) >= 0 and int(call["t"].max()) < 1000


def test_text_and_reference_dropout():
    sched = DDPMScheduler(num_train_timesteps=1000)
    x0, text, null, pred = setup(b=200, n=2)
    model = Recorder(pred)
    out = JediObjective(text_dropout=0.3, reference_dropout=0.5)(model, sched, x0, text, null, generator=g(1))
    seen = model.calls[0]["text"]
    for b in range(200):  # dropped sets see the empty prompt in every slot, the others their own prompts
        expected = null.expand(2, 5, 8) if out.text_dropped[b] else text[b]
        assert torch.equal(seen[b], expected)
    assert not bool(out.known[out.reference_dropped].any())  # dropped references: every slot generated
    assert (
        0.2 < float(out.text_dropped.float().mean()) < 0.4 and 0.4 < float(out.reference_dropped.float().mean()) < 0.6
    )
    # independent draws: the joint rate is close to the product of the rates
    both = float((out.text_dropped & out.reference_dropped).float().mean())
    assert abs(both - 0.3 * 0.5) < 0.07
    none = JediObjective(text_dropout=0.0, reference_dropout=0.0)(Recorder(pred), sched, x0, text, null, generator=g(1))
    assert not bool(none.text_dropped.any()) and not bool(none.reference_dropped.any())


def test_draw_known_with_slot_mask():
    slot_mask = torch.tensor([[True, True, True, False]] * 300 + [[True, False, False, False]] * 300)
    known = draw_known(slot_mask, 0.5, generator=g(2))
    assert not bool((known & ~slot_mask).any())  # padding never a reference
    assert bool(((~known) & slot_mask).any(dim=1).all())  # >= 1 real slot to generate
    assert not bool(known[300:].any())  # a set of one is always generated
    # P(known) per real slot of a 3-set conditioned on not-all-known: 0.5 * (1 - 0.25) / (1 - 0.125) = 3/7
    assert abs(float(known[:300, :3].float().mean()) - 3 / 7) < 0.05


def test_padded_slots_excluded_from_loss():
    sched = DDPMScheduler(num_train_timesteps=1000)
    x0, text, null, pred = setup(b=2, n=3)
    slot_mask = torch.tensor([[True, True, False], [True, True, True]])
    out = JediObjective()(Recorder(pred), sched, x0, text, null, slot_mask=slot_mask, generator=g(3))
    assert torch.equal(out.weights, slot_mask.float())
    pred2 = pred.clone()
    pred2[0, 2] += 100.0  # a padded slot's prediction does not change the loss
    out2 = JediObjective()(Recorder(pred2), sched, x0, text, null, slot_mask=slot_mask, generator=g(3))
    assert torch.equal(out.loss, out2.loss)


def test_v_prediction_target_and_determinism():
    sched = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    x0, text, null, pred = setup()
    model = Recorder(pred)
    out = JediObjective()(model, sched, x0, text, null, generator=g(4))
    call = model.calls[0]
    a = sched.alphas_cumprod[call["t"]][:, None, None, None, None]
    eps = (call["x_t"] - a.sqrt() * x0) / (1 - a).sqrt()
    v = a.sqrt() * eps - (1 - a).sqrt() * x0
    assert torch.allclose(out.loss, (pred - v).pow(2).mean(), rtol=1e-4, atol=1e-5)
    again = JediObjective()(Recorder(pred), sched, x0, text, null, generator=g(4))
    assert torch.equal(out.loss, again.loss) and torch.equal(out.known, again.known)


def test_real_joint_unet_gets_gradients(joint_unet):
    model = JointUNet.with_joint_attention(joint_unet).train()
    sched = DDPMScheduler(num_train_timesteps=1000)
    x0 = torch.randn(2, 3, 4, 8, 8, generator=g(0))
    text = torch.randn(2, 3, 5, 16, generator=g(1))
    out = JediObjective()(model, sched, x0, text, torch.zeros(5, 16), generator=g(2))
    out.loss.backward()
    extra = model.unet.conv_in.weight.grad[:, [0, 5, 6, 7, 8]]  # mask and reference channels learn
    assert torch.isfinite(out.loss) and float(extra.abs().sum()) > 0


def test_region_bias_in_training_acts_only_through_the_labels(joint_unet):
    """Issue 33: with region_bias > 0 and the data's subject labels the loss changes (generated tokens of one subject
    stop seeing the other subject's references); labels all -1, or gamma 0, give exactly the plain loss."""
    model = JointUNet.with_joint_attention(joint_unet).eval()
    sched = DDPMScheduler(num_train_timesteps=1000)
    x0 = torch.randn(2, 3, 4, 8, 8, generator=g(0))
    text = torch.randn(2, 3, 5, 16, generator=g(1))
    left = torch.arange(8).expand(8, 8) < 4  # (8, 8): the left half
    both = torch.where(left, 0, 1)  # a view of both: subject 0 left, subject 1 right
    regions = torch.stack([torch.zeros(8, 8), torch.ones(8, 8), both]).long().expand(2, 3, 8, 8)  # A, B, both
    objective = JediObjective(reference_probability=0.9, region_bias=8.0)

    def loss(obj, labels):
        with torch.no_grad():
            return obj(model, sched, x0, text, torch.zeros(5, 16), generator=g(2), regions=labels)

    plain, labelled = loss(JediObjective(reference_probability=0.9), None), loss(objective, regions)
    assert bool((labelled.known[:, :2]).any()) and not bool(labelled.known.all())  # references of both kinds drawn
    assert not torch.allclose(labelled.loss, plain.loss)
    assert torch.equal(loss(objective, torch.full_like(regions, -1)).loss, plain.loss)
    assert torch.equal(loss(JediObjective(reference_probability=0.9), regions).loss, plain.loss)


def test_invalid_rates():
    with pytest.raises(ValueError, match="reference_probability"):
        JediObjective(reference_probability=1.0)
    with pytest.raises(ValueError, match="text_dropout"):
        JediObjective(text_dropout=-0.1)


def test_foreground_weight_and_min_snr_gamma_by_hand():
    """Per slot: sum((1 + w fg) err) / sum(1 + w fg) over pixels (channel-mean error), times min(SNR, gamma) / SNR."""
    sched = DDPMScheduler(num_train_timesteps=1000)
    x0, text, null, pred = setup()
    fg = torch.rand(6, 3, 2, 2, generator=g(9))
    model = Recorder(pred)
    out = JediObjective(foreground_weight=4.0, snr_gamma=5.0)(
        model, sched, x0, text, null, generator=g(7), foreground=fg
    )
    call = model.calls[0]
    a = sched.alphas_cumprod[call["t"]]  # (B,)
    eps = (call["x_t"] - a.sqrt()[:, None, None, None, None] * x0) / (1 - a).sqrt()[:, None, None, None, None]
    err = (pred - eps).pow(2).mean(dim=2)  # (B, N, H, W)
    w = 1 + 4.0 * fg
    per_slot = (err * w).sum(dim=(2, 3)) / w.sum(dim=(2, 3))
    snr = a / (1 - a)
    per_slot = per_slot * (snr.clamp(max=5.0) / snr)[:, None]
    assert torch.allclose(out.loss, per_slot.mean(), rtol=1e-4, atol=1e-6)
    # Without a foreground map the weight changes nothing; with weight 0 the map is ignored.
    plain = JediObjective()(Recorder(pred), sched, x0, text, null, generator=g(7))
    ignored = JediObjective()(Recorder(pred), sched, x0, text, null, generator=g(7), foreground=fg)
    assert torch.equal(plain.loss, ignored.loss)
    with pytest.raises(ValueError, match="snr_gamma"):
        JediObjective(snr_gamma=-1.0)


def test_per_set_generators_make_a_sets_draws_its_own():
    """With one generator per set, a set's draws and loss terms do not depend on the other sets of the batch nor
    on its padding: what makes two processes with batches of b train as one with 2b."""
    sched = DDPMScheduler(num_train_timesteps=1000)
    x0, text, null, pred = setup(b=3, n=4)
    slot_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    objective = JediObjective(text_dropout=0.5, reference_dropout=0.5)

    def gens(seeds):
        return [torch.Generator().manual_seed(s) for s in seeds]

    whole = objective(Recorder(pred), sched, x0, text, null, slot_mask=slot_mask, generator=gens([10, 11, 12]))
    draws = objective.draw_per_set(slot_mask, x0, 1000, gens([10, 11, 12]))
    alone = objective.draw_per_set(slot_mask[1:2, :2], x0[1:2, :2], 1000, gens([11]))  # set 1, unpadded, alone
    assert torch.equal(draws.noise[1, :2], alone.noise[0]) and bool((draws.noise[1, 2:] == 0).all())
    assert torch.equal(draws.known[1, :2], alone.known[0]) and not bool(draws.known[1, 2:].any())
    for name in ("timesteps", "text_dropped", "reference_dropped"):
        assert getattr(draws, name)[1] == getattr(alone, name)[0], name
    assert torch.equal(whole.timesteps, draws.timesteps)  # __call__ with a list draws per set
    with pytest.raises(ValueError, match="2 generators for 3 sets"):
        objective.draw_per_set(slot_mask, x0, 1000, gens([1, 2]))
