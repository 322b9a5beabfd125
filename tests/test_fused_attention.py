"""Tests for src/engine/fused_attention.py: causal self-attention and its gradient in our C kernel
(attention.c), and where training uses it.

Oracle: attention written out in float64, softmax(q k^T / sqrt(hs) with the future at -inf) v, on the same qkv,
and its gradient taken by autograd. PyTorch's own float32 attention is held to the same tolerance, to show it
is a float32 one. Breaking the kernel on purpose (the diagonal left out of the mask, D left out of dS, the scale
left out of dS, dK's sum over the queries i >= j started one row late) fails these tests.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from src.engine import fused_attention
from src.engine.fused_attention import FusedCausalSelfAttention, causal_attention, use_fused_attention
from src.model import GPT, CausalSelfAttention, GPTConfig
from tests.conftest import assert_trains_alike


@pytest.fixture(scope="module", autouse=True)
def compiled():
    if not fused_attention.KERNEL.available():
        pytest.fail("the attention kernel does not compile here: " + fused_attention.KERNEL.failed[0])


def reference(qkv: torch.Tensor, n_head: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(y (B, T, C), log-sum-exp (B, nh, T)) in float64, written out."""
    B, T, C3 = qkv.shape
    q, k, v = qkv.double().view(B, T, 3, n_head, C3 // 3 // n_head).permute(2, 0, 3, 1, 4)  # (B, nh, T, hs) each
    scores = q @ k.mT / math.sqrt(q.size(-1))  # (B, nh, T, T)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    scores = scores.masked_fill(future, float("-inf"))
    y = torch.softmax(scores, dim=-1) @ v  # (B, nh, T, hs)
    return y.transpose(1, 2).reshape(B, T, C3 // 3), torch.logsumexp(scores, dim=-1)


def pytorch_float32(qkv: torch.Tensor, n_head: int) -> torch.Tensor:
    B, T, C3 = qkv.shape
    q, k, v = qkv.view(B, T, 3, n_head, C3 // 3 // n_head).permute(2, 0, 3, 1, 4)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C3 // 3)


def random_qkv(B: int, T: int, n_head: int, hs: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(B, T, 3 * n_head * hs, generator=torch.Generator().manual_seed(seed))


# (B, T, n_head, hs): the preset's heads, GPT-2's, sizes that are not whole blocks (R = 6 rows, W = 16 columns)
# and one that is whole blocks of both
SHAPES = [(2, 128, 3, 32), (1, 64, 2, 64), (3, 17, 3, 20), (2, 5, 2, 3), (1, 1, 1, 8), (2, 33, 4, 16), (1, 70, 1, 48),
          (1, 96, 2, 24)]


@pytest.mark.parametrize("B,T,n_head,hs", SHAPES)
def test_the_output_and_log_sum_exp_are_attentions_within_float32_rounding(B, T, n_head, hs):
    qkv = random_qkv(B, T, n_head, hs)
    y, lse = fused_attention.forward(qkv, n_head)
    expected, expected_lse = reference(qkv, n_head)
    assert y.shape == (B, T, n_head * hs) and lse.shape == (B, n_head, T)
    ours_error = (y.double() - expected).abs().max().item()
    pytorch_error = (pytorch_float32(qkv, n_head).double() - expected).abs().max().item()
    assert ours_error < 2e-6 and pytorch_error < 2e-6, (ours_error, pytorch_error)
    assert (lse.double() - expected_lse).abs().max() < 2e-6


@pytest.mark.parametrize("B,T,n_head,hs", SHAPES)
def test_the_gradient_is_attentions_within_float32_rounding(B, T, n_head, hs):
    qkv = random_qkv(B, T, n_head, hs, seed=1).requires_grad_()
    dy = torch.randn(B, T, n_head * hs, generator=torch.Generator().manual_seed(2))
    (ours,) = torch.autograd.grad(causal_attention(qkv, n_head)[0], qkv, dy)
    qkv64 = qkv.detach().double().requires_grad_()
    (expected,) = torch.autograd.grad(reference(qkv64, n_head)[0], qkv64, dy.double())
    qkv32 = qkv.detach().requires_grad_()
    (pytorch,) = torch.autograd.grad(pytorch_float32(qkv32, n_head), qkv32, dy)
    ours_error = (ours.double() - expected).abs().max().item()
    pytorch_error = (pytorch.double() - expected).abs().max().item()
    assert ours_error < 1e-5 and pytorch_error < 1e-5, (ours_error, pytorch_error)


def test_large_scores_do_not_overflow():
    """Scores in the hundreds: e^s would overflow float32 without the row's largest subtracted first."""
    qkv = random_qkv(2, 40, 2, 16, seed=3, scale=8.0).requires_grad_()
    y, lse = causal_attention(qkv, 2)
    expected, expected_lse = reference(qkv.detach(), 2)
    assert expected_lse.abs().max() > 100
    assert (y.double() - expected).abs().max() < 1e-4 * expected.abs().max()
    relative = (lse.double() - expected_lse) / expected_lse.abs().clamp(min=1)
    assert relative.abs().max() < 2e-5  # scores of ~100, each a sum of float32 products
    (grad,) = torch.autograd.grad(y.sum(), qkv)
    assert torch.isfinite(grad).all()


def test_a_nan_reaches_exactly_the_outputs_that_see_it():
    """A NaN query poisons its own row; a NaN key, every row from its position on (they all attend to it)."""
    T, n_head, hs = 9, 2, 4
    C = n_head * hs
    qkv = random_qkv(1, T, n_head, hs, seed=4)
    qkv[0, 3, 0] = float("nan")  # head 0's query at position 3
    qkv[0, 5, C + hs] = float("inf")  # head 1's key at position 5
    y, lse = fused_attention.forward(qkv, n_head)
    nan_rows = y.view(T, n_head, hs).isnan().all(-1)  # (T, nh)
    expected = torch.zeros(T, n_head, dtype=torch.bool)
    expected[3, 0] = True
    expected[5:, 1] = True
    assert torch.equal(nan_rows, expected)
    assert not y.view(T, n_head, hs)[~expected].isnan().any()
    assert torch.equal(lse[0].isnan().T, expected)


def test_the_result_does_not_depend_on_the_thread_count():
    qkv = random_qkv(4, 50, 3, 16, seed=5)
    dy = torch.randn(4, 50, 48, generator=torch.Generator().manual_seed(6))
    threads = torch.get_num_threads()  # the test session runs on 1 (conftest): compare it with 4

    def run(n: int):
        torch.set_num_threads(n)
        try:
            y, lse = fused_attention.forward(qkv, 3)
            return y, lse, fused_attention.backward(qkv, y, lse, dy, 3)
        finally:
            torch.set_num_threads(threads)

    for one, four in zip(run(1), run(4), strict=True):
        assert torch.equal(one, four)


def test_the_op_passes_pytorchs_checks_and_compiles_into_a_graph():
    qkv = random_qkv(2, 12, 2, 8, seed=7).requires_grad_()
    torch.library.opcheck(causal_attention, (qkv, 2))  # schema, fake tensors, autograd registration
    compiled = torch.compile(lambda t: causal_attention(t * 2, 2)[0] + 1, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(qkv), causal_attention(qkv * 2, 2)[0] + 1)


def test_inputs_the_c_code_would_misread_are_refused():
    with pytest.raises(ValueError, match="float32"):
        fused_attention.forward(torch.randn(1, 4, 12, dtype=torch.float64), 2)
    with pytest.raises(ValueError, match="multiple of 3 x 5 heads"):
        fused_attention.forward(torch.randn(1, 4, 12), 5)
    with pytest.raises(ValueError, match="contiguous"):
        fused_attention.forward(torch.randn(1, 12, 4).mT, 2)
    qkv = torch.randn(1, 4, 12)
    y, lse = fused_attention.forward(qkv, 2)
    with pytest.raises(ValueError, match="backward pass"):
        fused_attention.backward(qkv, y, lse, torch.randn(1, 4, 5), 2)


def test_a_context_longer_than_the_kernel_takes_goes_pytorchs_way(monkeypatch):
    """Past MAX_T positions the kernel's (T, T) buffers would outgrow memory and its C ints: refused if called,
    and the layer computes as the plain model does, the kernel not called."""
    monkeypatch.setattr(fused_attention, "MAX_T", 8)
    with pytest.raises(ValueError, match="T at most 8"):
        fused_attention.forward(torch.randn(1, 9, 12), 2)
    calls = []
    real = fused_attention.causal_attention
    monkeypatch.setattr(fused_attention, "causal_attention", lambda *a: calls.append(1) or real(*a))
    plain, fused = gpt_pair()
    x = torch.randint(0, 11, (2, 16), generator=torch.Generator().manual_seed(9))
    assert torch.equal(fused(x)[0], plain(x)[0]) and calls == []
    fused(x[:, :8])
    assert calls == [1] * 3


def gpt_pair(dropout: float = 0.0, attn_dropout: float | None = None) -> tuple[GPT, GPT]:
    config = GPTConfig(vocab_size=11, block_size=16, n_layer=3, n_head=2, d_model=32, dropout=dropout,
                       attn_dropout=attn_dropout)
    torch.manual_seed(0)
    plain, fused = GPT(config), GPT(config)
    fused.load_state_dict(plain.state_dict())
    assert use_fused_attention(fused) == 3
    return plain, fused


def test_a_gpt_with_the_kernel_trains_as_without_it():
    """Every block's attention is swapped; the loss and every gradient match the model as built, to float32
    rounding; the weights are the layer's own, under the same names."""
    plain, fused = gpt_pair()
    assert sum(type(m) is FusedCausalSelfAttention for m in fused.modules()) == 3
    assert not any(type(m) is CausalSelfAttention for m in fused.modules())
    assert use_fused_attention(fused) == 0  # swapped once only
    assert_trains_alike(plain, fused, seed=8)


def test_the_swapped_layer_keeps_every_setting_of_the_layer():
    """If CausalSelfAttention gains a setting, FusedCausalSelfAttention must carry it over: this fails until it does."""
    layer = CausalSelfAttention(GPTConfig(vocab_size=11, block_size=8, n_head=2, d_model=16, dropout=0.1))
    swapped = FusedCausalSelfAttention(layer)
    settings = lambda m: {k: v for k, v in vars(m).items() if not k.startswith("_") and k != "training"}  # noqa: E731
    assert settings(swapped) == settings(layer)
    assert dict(swapped.named_children()) == dict(layer.named_children())


def test_where_the_kernel_does_not_apply_the_layer_computes_as_before(monkeypatch):
    """Generating with a cache, looking inside, bf16 autocast and attention dropout in training all go the
    layer's own way, with the same results as the plain model."""
    calls = []
    real = fused_attention.causal_attention
    monkeypatch.setattr(fused_attention, "causal_attention", lambda *a: calls.append(1) or real(*a))
    plain, fused = gpt_pair()
    plain.eval(), fused.eval()
    prompt = torch.tensor([[1, 2, 3]])
    torch.manual_seed(1)
    expected = plain.generate(prompt, max_new_tokens=5)
    torch.manual_seed(1)
    assert torch.equal(fused.generate(prompt, max_new_tokens=5), expected)
    _, _, weights = fused(prompt, return_attention=True)
    assert len(weights) == 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(fused(prompt)[0], plain(prompt)[0])
    assert calls == []
    fused(prompt)  # float32, no cache: the kernel
    assert calls == [1] * 3

    calls.clear()
    plain, fused = gpt_pair(dropout=0.2)
    x = torch.randint(0, 11, (2, 16), generator=torch.Generator().manual_seed(9))
    torch.manual_seed(2)
    expected = plain(x)[0]
    torch.manual_seed(2)
    assert torch.equal(fused(x)[0], expected) and calls == []  # training with dropout: PyTorch's kernel
    fused.eval()
    fused(x)
    assert calls == [1] * 3  # evaluating: no dropout, the kernel


def test_residual_only_dropout_keeps_the_kernel_in_training(monkeypatch):
    """--dropout with --attn-dropout 0: the residual branches drop, attention stays exact, so training takes
    the kernel, and gives the plain model's loss and gradients under the same dropout masks."""
    calls = []
    real = fused_attention.causal_attention
    monkeypatch.setattr(fused_attention, "causal_attention", lambda *a: calls.append(1) or real(*a))
    plain, fused = gpt_pair(dropout=0.2, attn_dropout=0.0)
    x, y = (torch.randint(0, 11, (2, 16), generator=torch.Generator().manual_seed(s)) for s in (9, 10))
    losses = []
    for model in (plain, fused):
        torch.manual_seed(2)  # the same masks for both: the dropout calls come in the same order
        loss = model(x, y)[1]
        loss.backward()
        losses.append(loss)
    assert calls == [1] * 3  # the fused model's three layers, in training, with dropout on
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    torch.manual_seed(3)
    assert not torch.equal(fused(x)[0], fused(x)[0])  # and dropout is really on
    for (name, p), q in zip(plain.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_training_on_a_cpu_uses_the_kernel(cpu_run_swaps):
    assert cpu_run_swaps("use_fused_attention") == [2]


def test_without_a_compiler_nothing_is_swapped(swap_without_a_compiler):
    model, caught = swap_without_a_compiler(fused_attention, use_fused_attention)
    assert len(caught) == 1 and "attention.c could not be compiled" in str(caught[0].message)
    assert sum(type(m) is CausalSelfAttention for m in model.modules()) == 2
