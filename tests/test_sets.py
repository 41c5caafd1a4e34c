import pytest
import torch

from jointdiff.jedi.sets import mask_channel, masked_reference, pack_sets, random_known, unpack_sets


def test_pack_orders_image_j_of_set_b_at_row_b_times_n_plus_j():
    x = torch.arange(2 * 3 * 4).reshape(2, 3, 4)
    packed = pack_sets(x)
    assert packed.shape == (6, 4)
    for b in range(2):
        for j in range(3):
            assert torch.equal(packed[b * 3 + j], x[b, j])
    assert torch.equal(unpack_sets(packed, 3), x)


def test_unpack_rejects_set_size_that_does_not_divide_batch():
    with pytest.raises(ValueError, match="does not divide the batch of 5"):
        unpack_sets(torch.zeros(5, 2), 2)
    with pytest.raises(ValueError, match="positive int"):
        unpack_sets(torch.zeros(4, 2), 0)


def test_mask_channel_is_one_where_generated_zero_where_reference():
    known = torch.tensor([[True, False, False], [False, False, True]])
    m = mask_channel(known, 2, 3)
    assert m.shape == (2, 3, 1, 2, 3)
    expected = (~known).float()
    assert torch.equal(m.amin(dim=(2, 3, 4)), expected) and torch.equal(m.amax(dim=(2, 3, 4)), expected)


def test_masked_reference_zeroes_unknown_slots_only():
    x0 = torch.randn(2, 2, 4, 3, 3)
    known = torch.tensor([[True, False], [False, True]])
    r = masked_reference(x0, known)
    assert torch.equal(r[0, 0], x0[0, 0]) and torch.equal(r[1, 1], x0[1, 1])
    assert not r[0, 1].any() and not r[1, 0].any()
    with pytest.raises(ValueError):
        masked_reference(x0, known[:, :1])


def test_random_known_leaves_one_slot_to_generate_and_matches_conditional_bernoulli():
    g = torch.Generator().manual_seed(0)
    known = random_known(20000, 2, generator=g)
    assert not known.all(dim=1).any()
    # Conditioned on "not both known", each of the 3 remaining patterns has probability 1/3.
    frac_one_known = known.sum(dim=1).eq(1).float().mean().item()
    assert abs(frac_one_known - 2 / 3) < 0.02
    again = random_known(20000, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(known, again)
    with pytest.raises(ValueError):
        random_known(2, 2, p=1.0)
