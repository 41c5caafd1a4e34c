"""The training-free coupling options (jedi/coupling.py), equation by equation on hand-made tensors: the
reference bias, the layer selection and the early fraction of the steps (issue 32)."""

import math

import pytest
import torch
from conftest import randn
from diffusers import DDIMScheduler
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from jointdiff.common.tiny import TEXT_DIM
from jointdiff.jedi.attention import (
    CoupledAttnProcessor,
    PerImageAttnProcessor,
    SharedReferences,
    coupled_blocks,
    install_joint_attention,
)
from jointdiff.jedi.coupling import PARTS, Coupling, block_id
from jointdiff.jedi.guidance import Guidance
from jointdiff.jedi.model import JointUNet
from jointdiff.jedi.sampling import GuidedSetDenoiser, SetConditioning

C, LENGTH = 16, 6


@pytest.fixture
def attn():
    torch.manual_seed(0)
    return Attention(query_dim=C, heads=2, dim_head=8).eval()


def _biased_attention(attn: Attention, x: torch.Tensor, refs: torch.Tensor, beta: float) -> torch.Tensor:
    """The equation by hand for one set ``x`` (N, L, C) with reference flags ``refs`` (N,): softmax over all N*L
    keys of ``q k / sqrt(d) + beta [query in a target, key in a reference]``, then V and the output projection."""
    n = x.shape[0]
    tokens = x.reshape(1, n * LENGTH, C)  # (N, L, C) -> (1, N*L, C)
    q, k, v = attn.to_q(tokens), attn.to_k(tokens), attn.to_v(tokens)
    d = q.shape[-1] // attn.heads
    q, k, v = (t.reshape(1, n * LENGTH, attn.heads, d).transpose(1, 2) for t in (q, k, v))  # (1, h, N*L, d)
    is_ref = refs.repeat_interleave(LENGTH)  # (N*L,)
    bias = torch.zeros(n * LENGTH, n * LENGTH)
    bias[~is_ref[:, None] & is_ref[None, :]] = beta  # target query, reference key
    w = torch.softmax(q @ k.transpose(-1, -2) / d**0.5 + bias, dim=-1)
    o = (w @ v).transpose(1, 2).reshape(1, n * LENGTH, attn.heads * d)  # (1, h, N*L, d) -> (1, N*L, h*d)
    return attn.to_out[0](o).reshape(n, LENGTH, C)


def test_settings_check_their_values_and_name_the_blocks():
    assert Coupling() == Coupling(0.0, PARTS, 1.0)
    assert Coupling.of(coupled_layers="down, up.1", coupled_steps=0.5).layers == ("down", "up.1")
    assert Coupling.of(reference_bias=-math.inf).reference_bias == -math.inf
    for bad, needle in (
        ({"reference_bias": math.inf}, "finite or -inf"),
        ({"reference_bias": math.nan}, "must be a number"),
        ({"layers": ("side",)}, "unknown coupled layer 'side'"),
        ({"layers": ("mid.0",)}, "unknown coupled layer"),
        ({"steps": 1.5}, r"fraction in \[0, 1\]"),
    ):
        with pytest.raises(ValueError, match=needle):
            Coupling(**bad)
    assert block_id("down_blocks.1.attentions.0.transformer_blocks.0.attn1.processor") == "down.1"
    assert block_id("mid_block.attentions.0.transformer_blocks.0.attn1.processor") == "mid"
    assert block_id("up_blocks.12.attentions.2.transformer_blocks.0.attn1.processor") == "up.12"
    c = Coupling(layers=("down", "up.2"))
    assert [c.couples(b) for b in ("down.0", "down.3", "mid", "up.1", "up.2", "up.20")] == [
        True,
        True,
        False,
        False,
        True,
        False,
    ]
    # ceil(f S): the first steps couple; 0.3 x 10 is 3, not 4.
    assert [Coupling(steps=f).coupled_steps(s) for f, s in ((0, 4), (0.5, 4), (0.3, 10), (0.01, 4), (1, 7))] == [
        0,
        2,
        3,
        1,
        7,
    ]


@pytest.mark.parametrize("inner", [AttnProcessor2_0, AttnProcessor])
@pytest.mark.parametrize("beta", [0.0, 1.5, -2.0])
def test_reference_bias_adds_beta_to_the_target_queries_logits_on_reference_keys(attn, inner, beta):
    """Two sets of three with different reference slots, one batch: each equals the equation written out."""
    x = randn(6, LENGTH, C)
    refs = torch.tensor([True, False, False, True, True, False])  # set 0: one reference, set 1: two
    proc = CoupledAttnProcessor(inner(), block="down.0")
    out = proc(attn, x, set_size=3, coupling=Coupling(reference_bias=beta), reference_slots=refs)
    for s in range(2):
        expected = _biased_attention(attn, x[3 * s : 3 * s + 3], refs[3 * s : 3 * s + 3], beta)
        assert torch.allclose(out[3 * s : 3 * s + 3], expected, atol=1e-5)
    if beta == 0.0:  # beta 0 is JeDi's coupled attention
        assert torch.allclose(out, proc(attn, x, set_size=3), atol=1e-6)


@pytest.mark.parametrize("beta", [-math.inf, -1e4])
def test_a_large_negative_bias_cuts_the_targets_off_the_references(attn, beta):
    """beta -> -inf: the targets attend as a set of their own; the references' rows are unchanged."""
    x = randn(4, LENGTH, C)
    refs = torch.tensor([True, False, False, False])
    proc = CoupledAttnProcessor(block="up.1")
    out = proc(attn, x, set_size=4, coupling=Coupling(reference_bias=beta), reference_slots=refs)
    assert torch.allclose(out[1:], proc(attn, x[1:], set_size=3), atol=1e-5)  # targets: no coupling to references
    assert torch.allclose(out[:1], proc(attn, x, set_size=4)[:1], atol=1e-5)  # reference queries untouched
    x2 = x.clone()
    x2[0] = randn(LENGTH, C, seed=9)
    changed = proc(attn, x2, set_size=4, coupling=Coupling(reference_bias=beta), reference_slots=refs)
    assert torch.allclose(changed[1:], out[1:], atol=1e-5)  # the targets do not see the reference at all


def test_reference_bias_on_shared_references_equals_the_whole_set(attn):
    """Isolated references with beta: a target's row is the biased attention over [its references; its set]."""
    n, k, beta = 2, 2, 1.25
    refs, targets = randn(n, LENGTH, C), randn(k, LENGTH, C, seed=1)
    shared = SharedReferences(sets=1, size=n, sees=(True,))
    flags = torch.tensor([True] * n + [False] * k)
    out = CoupledAttnProcessor(block="mid")(
        attn,
        torch.cat([refs, targets]),
        set_size=k,
        shared_references=shared,
        coupling=Coupling(reference_bias=beta),
        reference_slots=flags,
    )
    expected = _biased_attention(attn, torch.cat([refs, targets]), flags, beta)
    assert torch.allclose(out[n:], expected[n:], atol=1e-5)
    assert torch.allclose(out[:n], CoupledAttnProcessor()(attn, refs, set_size=n), atol=1e-6)


def test_per_set_sizes_split_the_reference_flags_with_the_sets(attn):
    x = randn(5, LENGTH, C)
    refs = torch.tensor([True, False, False, True, False])  # a set of three, then a set of two
    out = CoupledAttnProcessor(block="up.1")(
        attn, x, set_size=(3, 2), coupling=Coupling(reference_bias=0.7), reference_slots=refs
    )
    assert torch.allclose(out[:3], _biased_attention(attn, x[:3], refs[:3], 0.7), atol=1e-5)
    assert torch.allclose(out[3:], _biased_attention(attn, x[3:], refs[3:], 0.7), atol=1e-5)


def test_an_unselected_block_attends_per_image(attn):
    x = randn(4, LENGTH, C)
    proc = CoupledAttnProcessor(block="up.1")
    per_image = AttnProcessor2_0()(attn, x)
    assert torch.allclose(proc(attn, x, set_size=4, coupling=Coupling(layers=("down", "mid"))), per_image, atol=1e-6)
    assert torch.allclose(proc(attn, x, set_size=4, coupling=Coupling(layers=("up.1",))), proc(attn, x, set_size=4))
    assert not torch.allclose(proc(attn, x, set_size=4), per_image, atol=1e-4)
    with pytest.raises(ValueError, match="without its block name"):
        CoupledAttnProcessor()(attn, x, set_size=4, coupling=Coupling(layers=("down",)))


def _unet_out(unet, x, text, n, coupling=None):
    kwargs = {"set_size": n} if coupling is None else {"set_size": n, "coupling": coupling}
    with torch.no_grad():
        return unet(x, torch.tensor(300), encoder_hidden_states=text, cross_attention_kwargs=kwargs).sample


def test_layer_selection_through_the_unet_equals_plain_processors_on_the_other_blocks(unet):
    """Selecting ``down`` per call equals installing plain per-image processors on mid and up; no block is
    per-image attention everywhere; the processors know their blocks."""
    install_joint_attention(unet)
    assert coupled_blocks(unet) == ("down.0", "mid", "up.1")
    x, text = randn(3, 4, 8, 8), randn(3, 5, TEXT_DIM, seed=1)
    selected = _unet_out(unet, x, text, 3, Coupling(layers=("down",)))
    none = _unet_out(unet, x, text, 3, Coupling(layers=()))
    full = _unet_out(unet, x, text, 3)
    procs = unet.attn_processors
    unet.set_attn_processor(
        {
            name: PerImageAttnProcessor(p.inner) if isinstance(p, CoupledAttnProcessor) and p.block != "down.0" else p
            for name, p in procs.items()
        }
    )
    assert torch.allclose(selected, _unet_out(unet, x, text, 3), atol=1e-6)
    assert torch.allclose(none, _unet_out(unet, x, text, 1), atol=1e-6)  # every image alone
    assert (selected - full).abs().max() > 1e-4 and (selected - none).abs().max() > 1e-4


def test_steps_fraction_couples_the_first_steps_only(joint_unet):
    """The denoiser couples while t >= the last coupled timestep: the first ceil(f S) steps; f = 0 never."""
    model = JointUNet.with_joint_attention(joint_unet)
    sched = DDIMScheduler()
    sched.set_timesteps(4)
    cond = SetConditioning(
        text=randn(1, 2, 5, 16), null_text=randn(1, 2, 5, 16, seed=2), references=randn(1, 1, 4, 8, 8)
    )
    seen = []
    forward = model.forward_groups
    model.forward_groups = lambda groups, **kw: seen.append(kw["coupling"]) or forward(groups, **kw)
    for f, coupled in ((0.0, 0), (0.5, 2), (0.6, 3), (1.0, 4)):
        seen.clear()
        d = GuidedSetDenoiser(model, cond, Guidance(scale=1.0), Coupling(reference_bias=0.5, steps=f), sched.timesteps)
        with torch.no_grad():
            for t in sched.timesteps:
                d(randn(1, 2, 4, 8, 8), t)
        assert [c.layers for c in seen] == [PARTS] * coupled + [()] * (4 - coupled)
        assert all(c.reference_bias == 0.5 for c in seen)
    with pytest.raises(ValueError, match="needs the sampler's timesteps"):
        GuidedSetDenoiser(model, cond, Guidance(), Coupling(steps=0.5))
    with pytest.raises(ValueError, match="matches no self-attention of this U-Net"):
        model.check_coupling(Coupling(layers=("down.3",)))


def _attention_by_hand(attn: Attention, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """One set ``x`` (N, L, C): softmax over all N*L keys of ``q k / sqrt(d) + bias`` (``(N*L, N*L)``), V, output."""
    n, length, _ = x.shape
    tokens = x.reshape(1, n * length, C)
    q, k, v = attn.to_q(tokens), attn.to_k(tokens), attn.to_v(tokens)
    d = q.shape[-1] // attn.heads
    q, k, v = (t.reshape(1, n * length, attn.heads, d).transpose(1, 2) for t in (q, k, v))
    w = torch.softmax(q @ k.transpose(-1, -2) / d**0.5 + bias, dim=-1)
    o = (w @ v).transpose(1, 2).reshape(1, n * length, attn.heads * d)
    return attn.to_out[0](o).reshape(n, length, C)


def test_region_bias_hand_made_matrix():
    """Issue 33: two references (slots 0 and 2) and a 2x2 target grid: reference 0 owns column 0, reference 1
    column 1; a query there gets -gamma on every key of the other reference, 0 on its own and on the targets."""
    from jointdiff.jedi.attention import region_bias

    refs = torch.tensor([True, False, True])  # slot 1 is a target
    bias = region_bias(refs, 4, 2.0, torch.float32, torch.device("cpu"))  # (L=4, N*L=12)
    column = torch.tensor([0, 1, 0, 1])  # token t of a 2x2 grid, row-major: x = t % 2
    for t in range(4):
        keys = bias[t].reshape(3, 4)  # per slot
        other = 2 if column[t] == 0 else 0
        assert (keys[other] == -2.0).all() and (keys[2 - other] == 0).all() and (keys[1] == 0).all()
    three = region_bias(torch.tensor([True, True, True, False]), 9, math.inf, torch.float32, torch.device("cpu"))
    owner = [next(i for i in range(3) if three[t].reshape(4, 9)[i, 0] == 0) for t in range(9)]
    assert owner == [0, 1, 2] * 3  # three references: three columns of a 3x3 grid
    with pytest.raises(ValueError, match="square token grids"):
        region_bias(refs, 6, 1.0, torch.float32, torch.device("cpu"))


@pytest.mark.parametrize("gamma", [0.0, 1.5, math.inf])
def test_region_bias_through_the_coupled_processor_equals_the_equation(attn, gamma):
    """Two sets, references of two subjects and one target each (a 3x3 grid): the processor's output equals the
    attention written out with the region bias; gamma 0 is JeDi's coupled attention; with one reference the
    region bias changes nothing."""
    from jointdiff.jedi.attention import region_bias

    length = 9
    x = randn(6, length, C, seed=3)
    refs = torch.tensor([True, True, False, True, True, False])
    proc = CoupledAttnProcessor(block="down.0")
    out = proc(attn, x, set_size=3, coupling=Coupling(region_bias=gamma), reference_slots=refs)
    pattern = refs[:3]
    bias = torch.zeros(3 * length, 3 * length)
    bias[2 * length :] = region_bias(pattern, length, gamma, torch.float32, torch.device("cpu"))  # target queries
    for s in range(2):
        expected = _attention_by_hand(attn, x[3 * s : 3 * s + 3], bias)
        assert torch.allclose(out[3 * s : 3 * s + 3], expected, atol=1e-5)
    if gamma == 0.0:
        assert torch.allclose(out, proc(attn, x, set_size=3), atol=1e-6)
    if gamma == math.inf:  # reference 0's columns (x * 2 // 3 == 0: x = 0, 1) do not see reference 1 at all
        x2 = x.clone()
        x2[1] = randn(length, C, seed=8)
        changed = proc(attn, x2, set_size=3, coupling=Coupling(region_bias=gamma), reference_slots=refs)
        own = torch.arange(length) % 3 * 2 // 3 == 0
        assert own.tolist() == [True, True, False] * 3
        assert torch.allclose(changed[2, own], out[2, own], atol=1e-5)
        assert not torch.allclose(changed[2, ~own], out[2, ~own], atol=1e-4)
    one = torch.tensor([True, False, False, True, False, False])
    plain = proc(attn, x, set_size=3, reference_slots=one)
    assert torch.allclose(proc(attn, x, set_size=3, coupling=Coupling(region_bias=gamma), reference_slots=one), plain)


def test_region_bias_is_checked():
    assert Coupling.of(region_bias=2.0).region_bias == 2.0 and Coupling.of(
        **Coupling(region_bias=3.0).settings()
    ) == Coupling(region_bias=3.0)
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="region bias must be >= 0"):
            Coupling(region_bias=bad)


def test_label_bias_and_pooled_labels_by_hand():
    """Issue 33, training's region bias: -gamma where a query and a reference key carry different subjects; tokens
    without a subject (-1) and target keys are free. Labels pool to coarser grids by majority (ties: smaller)."""
    from jointdiff.jedi.attention import label_bias, pool_labels

    queries = torch.tensor([[0, 1, -1]])  # (S=1, Q=3)
    keys = torch.tensor([[0, 1, -1, 1]])  # (S=1, K=4)
    on_refs = torch.tensor([True, True, True, False])  # the last key is a target's
    got = label_bias(queries, keys, on_refs, 2.0)[0]
    assert got.tolist() == [[0, -2, 0, 0], [-2, 0, 0, 0], [0, 0, 0, 0]]
    assert label_bias(queries, keys, on_refs, math.inf)[0, 0, 1] == -math.inf
    maps = torch.tensor([[[0, 0, 1, 1], [0, 1, 1, 1], [-1, -1, 1, -1], [-1, 0, -1, -1]]])  # (1, 4, 4)
    assert pool_labels(maps, 4).tolist() == [[0, 1, -1, -1]]  # 2x2 pixels a token: 3 of 4, 3 of 4, 2:1:1, 3 of 4
    assert torch.equal(pool_labels(maps, 16), maps.flatten(1))
    assert pool_labels(torch.tensor([[[0, 1], [1, 0]]]), 1).tolist() == [[0]]  # a tie: the smaller label
    with pytest.raises(ValueError, match="do not pool to 9 tokens"):
        pool_labels(maps, 9)
    with pytest.raises(ValueError, match=r"subjects \(>= 0\) or -1"):
        pool_labels(maps - 1, 4)


@pytest.mark.parametrize("gamma", [1.5, math.inf])
def test_region_labels_of_the_column_rule_give_the_column_rule(attn, gamma):
    """Labels that say what the column rule says (reference i: label i; a target's column j of n: label j), given at
    twice the token resolution, reproduce the processor's column-rule output exactly; labels all -1 change
    nothing."""
    length, side = 9, 3
    x = randn(6, length, C, seed=3)
    refs = torch.tensor([True, True, False, True, True, False])
    proc = CoupledAttnProcessor(block="down.0")
    columns = proc(attn, x, set_size=3, coupling=Coupling(region_bias=gamma), reference_slots=refs)
    owner = (torch.arange(side) * 2 // side).repeat(side, 1)  # (3, 3): column x -> reference x * 2 // 3
    fine = owner.repeat_interleave(2, 0).repeat_interleave(2, 1)  # (6, 6): the same at twice the resolution
    per_image = [torch.full((6, 6), 0), torch.full((6, 6), 1), fine]  # reference A, reference B, the target
    regions = torch.stack(per_image * 2)  # (B*N = 6, 6, 6)
    labelled = proc(attn, x, set_size=3, coupling=Coupling(region_bias=gamma), reference_slots=refs, regions=regions)
    assert torch.allclose(labelled, columns, atol=1e-6)
    free = proc(
        attn,
        x,
        set_size=3,
        coupling=Coupling(region_bias=gamma),
        reference_slots=refs,
        regions=torch.full_like(regions, -1),
    )
    assert torch.allclose(free, proc(attn, x, set_size=3), atol=1e-6)
    with pytest.raises(ValueError, match="one per image"):
        proc(attn, x, set_size=3, coupling=Coupling(region_bias=gamma), reference_slots=refs, regions=regions[:3])


def test_region_labels_bind_a_target_region_to_its_own_subject(attn):
    """One reference (subject 0) and a target whose right column is subject 1: with gamma = inf those tokens see no
    reference token, so changing the reference leaves them as they were and moves the others (the column rule
    would change nothing with one reference)."""
    length = 9
    x = randn(2, length, C, seed=5)
    refs = torch.tensor([True, False])
    target = torch.tensor([[0, 0, 1]] * 3)  # (3, 3): the right column is subject 1
    regions = torch.stack([torch.zeros(3, 3, dtype=torch.long), target])
    kw = {"set_size": 2, "coupling": Coupling(region_bias=math.inf), "reference_slots": refs, "regions": regions}
    out = CoupledAttnProcessor(block="down.0")(attn, x, **kw)
    x2 = x.clone()
    x2[0] = randn(length, C, seed=9)
    changed = CoupledAttnProcessor(block="down.0")(attn, x2, **kw)
    right = target.flatten() == 1
    assert torch.allclose(changed[1, right], out[1, right], atol=1e-6)
    assert not torch.allclose(changed[1, ~right], out[1, ~right], atol=1e-4)
