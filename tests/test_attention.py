from unittest import mock

import diffusers.models.attention_processor as ap
import pytest
import torch
from conftest import randn
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from jointdiff.common.tiny import TEXT_DIM
from jointdiff.jedi.attention import (
    CoupledAttnProcessor,
    PerImageAttnProcessor,
    SharedReferences,
    has_joint_attention,
    install_joint_attention,
    remove_joint_attention,
)


def _manual_attention(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    """Softmax(QK^T / sqrt(d)) V written out by hand, one sequence per row of x: (S, L, C)."""
    s, length, _ = x.shape
    q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
    d = q.shape[-1] // attn.heads
    q, k, v = (t.reshape(s, length, attn.heads, d).transpose(1, 2) for t in (q, k, v))  # (S, h, L, d)
    w = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
    o = (w @ v).transpose(1, 2).reshape(s, length, attn.heads * d)  # (S, h, L, d) -> (S, L, h*d)
    return attn.to_out[0](o)


@pytest.fixture
def attn():
    torch.manual_seed(0)
    return Attention(query_dim=16, heads=2, dim_head=8).eval()


def test_set_of_one_equals_stock_processor(attn):
    x = randn(6, 10, 16)
    stock = AttnProcessor2_0()(attn, x)
    coupled = CoupledAttnProcessor()(attn, x, set_size=1)
    assert torch.allclose(coupled, stock, atol=1e-6)


def test_coupled_equals_attention_over_concatenated_tokens(attn):
    b, n, length = 2, 3, 10
    x = randn(b * n, length, 16)
    out = CoupledAttnProcessor()(attn, x, set_size=n)
    for i in range(b):
        joint = x[i * n : (i + 1) * n].reshape(1, n * length, 16)  # (N, L, C) -> (1, N*L, C)
        expected = _manual_attention(attn, joint).reshape(n, length, 16)
        assert torch.allclose(out[i * n : (i + 1) * n], expected, atol=1e-5)


def test_coupling_wraps_any_inner_processor(attn):
    x = randn(4, 10, 16)
    a = CoupledAttnProcessor(AttnProcessor())(attn, x, set_size=2)
    b = CoupledAttnProcessor(AttnProcessor2_0())(attn, x, set_size=2)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("inner", [AttnProcessor2_0, AttnProcessor])
def test_slot_mask_excluded_slot_is_alone_included_slots_form_a_smaller_set(attn, inner):
    n, length = 4, 10
    x = randn(2 * n, length, 16)
    slot_mask = torch.tensor([[True, False, True, True], [False, False, False, False]])
    proc = CoupledAttnProcessor(inner())
    out = proc(attn, x, set_size=n, slot_mask=slot_mask)
    # Set 0: slots 0, 2, 3 are a set of three; slot 1 is an uncoupled image.
    sub = proc(attn, x[[0, 2, 3]], set_size=3)
    assert torch.allclose(out[[0, 2, 3]], sub, atol=1e-5)
    assert torch.allclose(out[1], AttnProcessor2_0()(attn, x[1:2])[0], atol=1e-5)
    # Set 1: nothing included, every slot alone.
    assert torch.allclose(out[n:], AttnProcessor2_0()(attn, x[n:]), atol=1e-5)
    all_on = proc(attn, x, set_size=n, slot_mask=torch.ones(2, n, dtype=torch.bool))
    assert torch.allclose(all_on, proc(attn, x, set_size=n), atol=1e-6)


@pytest.mark.parametrize("sizes", [(3, 3, 2, 2, 2), (2, 3, 3, 1), (4,)])
def test_per_set_sizes_equal_each_set_alone(attn, sizes):
    """``set_size`` as a tuple: every set of the packed batch attends over its own tokens only."""
    x = randn(sum(sizes), 10, 16)
    out = CoupledAttnProcessor()(attn, x, set_size=sizes)
    start = 0
    for n in sizes:
        expected = _manual_attention(attn, x[start : start + n].reshape(1, n * 10, 16)).reshape(n, 10, 16)
        assert torch.allclose(out[start : start + n], expected, atol=1e-5)
        start += n


@pytest.mark.parametrize("inner", [AttnProcessor2_0, AttnProcessor])
def test_shared_references_targets_see_the_whole_set_references_see_only_themselves(attn, inner):
    """Isolated references: a target's row is the coupled attention of [its set's references; its
    targets] (eq. of the whole set), a reference's row the coupled attention of the references alone."""
    b, n, k, length = 2, 2, 3, 10
    refs, targets_a, targets_b, free = (
        randn(b * n, length, 16),
        randn(b * k, length, 16, seed=1),
        randn(b * k, length, 16, seed=2),
        randn(b * k, length, 16, seed=3),
    )
    x = torch.cat([refs, targets_a, targets_b, free])
    shared = SharedReferences(sets=b, size=n, sees=(True,) * (2 * b) + (False,) * b)
    out = CoupledAttnProcessor(inner())(attn, x, set_size=k, shared_references=shared)
    assert out.shape == x.shape
    expected_refs = torch.cat(
        [
            _manual_attention(attn, refs[i * n : (i + 1) * n].reshape(1, n * length, 16)).reshape(n, length, 16)
            for i in range(b)
        ]
    )
    assert torch.allclose(out[: b * n], expected_refs, atol=1e-5)
    for g, targets in enumerate((targets_a, targets_b)):
        for i in range(b):
            whole = torch.cat([refs[i * n : (i + 1) * n], targets[i * k : (i + 1) * k]])  # the set (n + K, L, C)
            expected = _manual_attention(attn, whole.reshape(1, (n + k) * length, 16)).reshape(n + k, length, 16)
            start = b * n + (g * b + i) * k
            assert torch.allclose(out[start : start + k], expected[n:], atol=1e-5)
    free_out = out[b * n + 2 * b * k :]  # sets that do not see the references: ordinary sets of K
    assert torch.allclose(free_out, CoupledAttnProcessor()(attn, free, set_size=k), atol=1e-5)


def test_shared_references_do_not_depend_on_the_targets(attn):
    refs, targets = randn(2, 10, 16), randn(3, 10, 16, seed=1)
    shared = SharedReferences(sets=1, size=2, sees=(True,))
    a = CoupledAttnProcessor()(attn, torch.cat([refs, targets]), set_size=3, shared_references=shared)
    b = CoupledAttnProcessor()(attn, torch.cat([refs, 5 * targets]), set_size=3, shared_references=shared)
    assert torch.equal(a[:2], b[:2])
    assert not torch.allclose(a[2:], b[2:], atol=1e-3)


def test_shared_references_bad_layout_raises(attn):
    x = randn(2 + 6, 10, 16)
    proc = CoupledAttnProcessor()
    with pytest.raises(ValueError, match=r"3 flags for the sets after them, set sizes \(3, 3\)"):
        proc(attn, x, set_size=3, shared_references=SharedReferences(sets=1, size=2, sees=(True,) * 2 + (False,)))
    with pytest.raises(ValueError, match="set_size=4 does not divide the 6 images after the references"):
        proc(attn, x, set_size=4, shared_references=SharedReferences(sets=1, size=2, sees=(True,)))
    with pytest.raises(ValueError, match="no attention_mask or slot_mask"):
        proc(
            attn,
            x,
            set_size=3,
            slot_mask=torch.ones(2, 3, dtype=torch.bool),
            shared_references=SharedReferences(1, 2, (True,) * 2),
        )
    with pytest.raises(ValueError, match="need >= 1 set"):
        SharedReferences(sets=0, size=2, sees=())


def test_bad_set_arguments_raise_precise_errors(attn):
    x = randn(6, 10, 16)
    with pytest.raises(ValueError, match="set_size=4 does not divide the batch of 6"):
        CoupledAttnProcessor()(attn, x, set_size=4)
    with pytest.raises(ValueError, match="slot_mask must be a bool tensor of shape"):
        CoupledAttnProcessor()(attn, x, set_size=3, slot_mask=torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="positive int"):
        CoupledAttnProcessor()(attn, x, set_size=0)
    with pytest.raises(ValueError, match=r"set sizes \(3, 2\) add up to 5, not the batch of 6"):
        CoupledAttnProcessor()(attn, x, set_size=(3, 2))
    with pytest.raises(ValueError, match="slot_mask needs one set size"):
        CoupledAttnProcessor()(attn, x, set_size=(3, 3), slot_mask=torch.ones(2, 3, dtype=torch.bool))


def _unet_out(unet, x, text, n=None, slot_mask=None):
    kwargs = None if n is None else {"set_size": n, "slot_mask": slot_mask}
    with torch.no_grad():
        return unet(x, torch.tensor(300), encoder_hidden_states=text, cross_attention_kwargs=kwargs).sample


def test_install_on_unet_couples_attn1_only_and_set_of_one_matches_stock(unet):
    x, text = randn(4, 4, 8, 8), randn(4, 5, TEXT_DIM, seed=1)
    stock = _unet_out(unet, x, text)
    install_joint_attention(unet)
    install_joint_attention(unet)  # idempotent: no double wrapping
    for name, proc in unet.attn_processors.items():
        kind = CoupledAttnProcessor if ".attn1." in name else PerImageAttnProcessor
        assert isinstance(proc, kind) and type(proc.inner) is AttnProcessor2_0
    assert has_joint_attention(unet)
    assert torch.allclose(_unet_out(unet, x, text, n=1), stock, atol=1e-6)
    remove_joint_attention(unet)
    assert not has_joint_attention(unet)
    assert all(type(p) is AttnProcessor2_0 for p in unet.attn_processors.values())


def test_set_arguments_reach_processors_without_unexpected_kwarg_warnings(unet):
    install_joint_attention(unet)
    with mock.patch.object(ap.logger, "warning") as warn:
        _unet_out(unet, randn(4, 4, 8, 8), randn(4, 5, TEXT_DIM), n=2)
    warn.assert_not_called()


def test_coupling_is_real_and_sets_do_not_leak(unet):
    install_joint_attention(unet)
    n = 3
    x, text = randn(2 * n, 4, 8, 8), randn(2 * n, 5, TEXT_DIM, seed=1)
    base = _unet_out(unet, x, text, n=n)
    x2 = x.clone()
    x2[2] = randn(4, 8, 8, seed=7)  # image j=2 of set 0
    changed = _unet_out(unet, x2, text, n=n)
    assert (changed[0] - base[0]).abs().max() > 1e-4  # image i=0 of the same set sees it
    assert torch.allclose(changed[n:], base[n:], atol=1e-6)  # the other set does not
    # Without coupling (set size 1, or processors removed) image 0 does not see image 2.
    assert torch.allclose(_unet_out(unet, x2, text, n=1)[0], _unet_out(unet, x, text, n=1)[0], atol=1e-6)
    remove_joint_attention(unet)
    assert torch.allclose(_unet_out(unet, x2, text)[0], _unet_out(unet, x, text)[0], atol=1e-6)


def test_permuting_a_set_permutes_the_outputs(unet):
    install_joint_attention(unet)
    n = 4
    x, text = randn(n, 4, 8, 8), randn(n, 5, TEXT_DIM, seed=1)
    perm = torch.tensor([2, 0, 3, 1])
    out = _unet_out(unet, x, text, n=n)
    out_perm = _unet_out(unet, x[perm], text[perm], n=n)
    assert torch.allclose(out_perm, out[perm], atol=1e-5)


def test_slot_mask_through_the_unet_equals_dropping_the_slots(unet):
    install_joint_attention(unet)
    x, text = randn(3, 4, 8, 8), randn(3, 5, TEXT_DIM, seed=1)
    masked = _unet_out(unet, x, text, n=3, slot_mask=torch.tensor([[True, False, True]]))
    assert torch.allclose(masked[[0, 2]], _unet_out(unet, x[[0, 2]], text[[0, 2]], n=2), atol=1e-5)
    assert torch.allclose(masked[1:2], _unet_out(unet, x[1:2], text[1:2], n=1), atol=1e-5)
