"""Global pooling, attention, the shared decoder and the fine stripes."""

import torch

from partsearch.model.decoder import SharedDecoder
from partsearch.model.encoders import Attention, dropout, global_max_pool, key_padding
from partsearch.model.fine import foreground_map, stripe_bounds, stripe_pool


def test_global_max_pool_ignores_padding_tokens():
    tokens = torch.tensor([[[1.0, -5.0], [2.0, -4.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, False]])
    assert torch.equal(global_max_pool(tokens, mask), torch.tensor([[2.0, -4.0]]))


def test_attention_weights_path_equals_the_fused_path():
    torch.manual_seed(0)
    attn = Attention(16, 4, dropout=0.0)
    q, kv = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    fused, none = attn(q, kv, key_padding(mask))
    explicit, weights = attn(q, kv, key_padding(mask), need_weights=True)
    assert none is None and torch.allclose(fused, explicit, atol=1e-6)
    assert weights.shape == (2, 4, 3, 5) and torch.allclose(weights.sum(-1), torch.ones(2, 4, 3))
    assert weights[1, ..., 2:].abs().max() == 0


def test_dropout_keeps_one_minus_p_in_every_lane_and_scales_the_rest():
    torch.manual_seed(0)
    out = dropout(torch.ones(4 * 50_000), 0.1)
    kept = out != 0
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.9))
    # four elements share one 64-bit draw: each of the four 16-bit lanes keeps 1 - p on its own
    for lane in range(4):
        assert abs(kept.view(-1, 4)[:, lane].float().mean().item() - 0.9) < 0.005


def test_dropout_is_the_identity_in_eval_and_at_zero():
    x = torch.randn(3, 5)
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0) is x


def test_dropout_gradient_is_its_scaled_keep_mask():
    torch.manual_seed(0)
    x = torch.randn(6, 7, requires_grad=True)
    out = dropout(x, 0.25)
    out.sum().backward()
    assert torch.allclose(x.grad, (out != 0).float() / 0.75)


def test_dropout_repeats_under_one_seed():
    torch.manual_seed(3)
    first = dropout(torch.ones(9, 11), 0.5)
    torch.manual_seed(3)
    assert torch.equal(first, dropout(torch.ones(9, 11), 0.5))


def test_dropout_switched_off_draws_as_torch_does(monkeypatch):
    from partsearch.model import encoders

    monkeypatch.setattr(encoders, "CPU_WORD_DROPOUT", False)
    torch.manual_seed(5)
    ours = dropout(torch.ones(7, 9), 0.2)
    torch.manual_seed(5)
    assert torch.equal(ours, torch.nn.functional.dropout(torch.ones(7, 9), 0.2))


def test_attention_dropout_in_training_is_unbiased_and_leaves_the_weights_whole():
    torch.manual_seed(0)
    attn = Attention(16, 4, dropout=0.3)
    q, kv = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    expected = attn.eval()(q, kv)[0]
    attn.train()
    one, weights = attn(q, kv, need_weights=True)
    assert not torch.allclose(one, expected, atol=1e-3)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 3))  # returned before dropout
    with torch.no_grad():
        mean = torch.stack([attn(q, kv)[0] for _ in range(2000)]).mean(0)
    assert torch.allclose(mean, expected, atol=0.02)


def test_decoder_attention_is_a_distribution_over_memory():
    decoder = SharedDecoder(16, num_coarse=3, layers=2, heads=4, dropout=0.0)
    out = decoder(torch.randn(2, 10, 16), need_weights=True)
    assert out.coarse.shape == (2, 3, 16) and out.fine is None and out.attention.shape == (2, 3, 10)
    assert torch.allclose(out.attention.sum(-1), torch.ones(2, 3)) and (out.attention >= 0).all()


def test_fine_queries_in_the_same_pass_do_not_change_the_coarse_tokens():
    torch.manual_seed(0)
    decoder = SharedDecoder(16, num_coarse=3, layers=2, heads=4, dropout=0.0)
    memory, mask = torch.randn(2, 10, 16), torch.arange(10).expand(2, 10) < torch.tensor([[10], [6]])
    alone = decoder(memory, mask)
    joint = decoder(memory, mask, fine_queries=torch.randn(4, 16))
    assert joint.fine.shape == (2, 4, 16)
    assert torch.allclose(alone.coarse, joint.coarse, atol=1e-6)


def test_fine_tokens_do_not_see_the_coarse_tokens():
    torch.manual_seed(0)
    decoder = SharedDecoder(16, num_coarse=3, layers=2, heads=4, dropout=0.0)
    memory, fine_queries = torch.randn(2, 10, 16), torch.randn(4, 16)
    before = decoder(memory, fine_queries=fine_queries).fine
    with torch.no_grad():
        decoder.coarse_queries.normal_()
    assert torch.allclose(before, decoder(memory, fine_queries=fine_queries).fine, atol=1e-6)


def test_foreground_map_peaks_at_one_per_image():
    attention = torch.softmax(torch.randn(3, 12), dim=-1)
    fg = foreground_map(attention, (4, 3))
    assert fg.shape == (3, 4, 3) and fg.dtype == torch.float32
    assert torch.allclose(fg.amax(dim=(1, 2)), torch.ones(3))
    assert torch.allclose(fg.flatten(1) / attention, (1 / attention.amax(1, keepdim=True)).expand(3, 12))


def test_stripe_bounds_partition_the_rows_when_parts_divide_height():
    bounds = stripe_bounds(24, 6)
    rows = [r for start, end in bounds for r in range(start, end)]
    assert rows == list(range(24))
    assert all(end - start == 4 for start, end in bounds)


def test_stripe_bounds_cover_every_row_when_parts_do_not_divide_height():
    bounds = stripe_bounds(7, 3)
    assert bounds[0][0] == 0 and bounds[-1][1] == 7
    assert all(b[0] <= a[1] for a, b in zip(bounds, bounds[1:]))


def test_stripes_max_pool_the_foreground_weighted_memory():
    torch.manual_seed(0)
    h, w, d, parts = 8, 3, 5, 4
    memory, fg = torch.randn(2, h * w, d), torch.rand(2, h, w)
    fine = stripe_pool(memory, fg, parts)
    weighted = memory.unflatten(1, (h, w)) * fg[..., None]
    assert torch.equal(fine.amax(dim=1), weighted.amax(dim=(1, 2)))
    for i, (start, end) in enumerate(stripe_bounds(h, parts)):
        assert torch.equal(fine[:, i], weighted[:, start:end].amax(dim=(1, 2)))


def test_stripes_follow_adaptive_bounds_when_parts_do_not_divide_height():
    memory, fg = torch.randn(1, 7 * 2, 3), torch.rand(1, 7, 2)
    fine = stripe_pool(memory, fg, 3)
    weighted = memory.unflatten(1, (7, 2)) * fg[..., None]
    for i, (start, end) in enumerate(stripe_bounds(7, 3)):
        assert torch.equal(fine[:, i], weighted[:, start:end].amax(dim=(1, 2)))
