"""Tests for src/engine/muon.py: the Newton-Schulz orthogonalisation and the Muon update against float64
references computed another way (through an SVD), the AdamW half against torch.optim.AdamW, and who gets
which optimizer."""

from __future__ import annotations

import math

import pytest
import torch

from src.engine.muon import NS_COEFFICIENTS, Muon, muon_groups, orthogonalize
from src.model import GPT, GPTConfig
from src.train import configure_optimizer


def reference_orthogonalize(g: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Float64, through the SVD: Newton-Schulz maps each singular value s of G / ||G||_F through the
    polynomial p(s) = a s + b s^3 + c s^5, `steps` times, and keeps the singular vectors."""
    g = g.double()
    u, s, vh = torch.linalg.svd(g / g.norm(), full_matrices=False)
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        s = a * s + b * s**3 + c * s**5
    return u @ torch.diag(s) @ vh


@pytest.mark.parametrize("shape", [(8, 8), (16, 48), (48, 16), (1, 5), (64, 256)])
def test_orthogonalize_equals_the_polynomial_on_singular_values(shape):
    g = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    ours = orthogonalize(g)
    expected = reference_orthogonalize(g)
    assert ours.shape == g.shape and ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), expected, atol=2e-5, rtol=1e-4)


def test_the_coefficients_are_keller_jordans():
    assert NS_COEFFICIENTS == (3.4445, -4.7750, 2.0315)


def test_muon_on_the_bigram_is_adamw_alone():
    from src.bigram import BigramLanguageModel

    opt = configure_optimizer(BigramLanguageModel(vocab_size=7), 1e-3, 0.1, torch.device("cpu"), kind="muon")
    assert isinstance(opt, Muon) and not any(g["use_muon"] for g in opt.param_groups)


def test_orthogonalize_is_nearly_orthogonal():
    """Five steps put every singular value into about [0.7, 1.2], and the result points along U V^T."""
    g = torch.randn(96, 384, generator=torch.Generator().manual_seed(1))
    s = torch.linalg.svdvals(orthogonalize(g).double())
    assert s.min() > 0.6 and s.max() < 1.25, (s.min(), s.max())
    u, _, vh = torch.linalg.svd(g.double(), full_matrices=False)
    exact = u @ vh
    cosine = (orthogonalize(g).double() * exact).sum() / (exact.norm() * orthogonalize(g).double().norm())
    assert cosine > 0.95


@pytest.mark.parametrize("shapes", [[(24, 8)], [(24, 8), (8, 24), (24, 8), (8, 8)]], ids=["one", "stacked"])
def test_muon_update_matches_a_float64_reference_over_three_steps(shapes):
    """Momentum, Nesterov, decoupled weight decay and the tall-matrix scale, written out in float64, one
    matrix at a time; Muon orthogonalises the matrices of one shape as a stack, which must not mix them."""
    gen = torch.Generator().manual_seed(2)
    weights = [torch.randn(shape, generator=gen) for shape in shapes]
    lr, wd, beta = 0.02, 0.1, 0.95
    params = [torch.nn.Parameter(w.clone()) for w in weights]
    opt = Muon([{"params": params, "use_muon": True, "weight_decay": wd}], lr=lr, momentum=beta)
    expected = [w.double() for w in weights]
    momenta = [torch.zeros(shape, dtype=torch.float64) for shape in shapes]
    for _ in range(3):
        grads = [torch.randn(shape, generator=gen) for shape in shapes]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        for i, (g, (rows, cols)) in enumerate(zip(grads, shapes, strict=True)):
            momenta[i] = beta * momenta[i] + (1 - beta) * g.double()
            d = (1 - beta) * g.double() + beta * momenta[i]
            scale = math.sqrt(max(1.0, rows / cols))  # sqrt(24 / 8) for the tall ones
            expected[i] = expected[i] * (1 - lr * wd) - lr * scale * reference_orthogonalize(d)
    for p, w in zip(params, expected, strict=True):
        torch.testing.assert_close(p.detach().double(), w, atol=1e-5, rtol=1e-5)


def test_orthogonalize_a_stack_is_each_matrix_alone():
    stack = torch.randn(3, 16, 40, generator=torch.Generator().manual_seed(4))
    for g in (stack, stack.mT):  # wide and tall
        torch.testing.assert_close(orthogonalize(g), torch.stack([orthogonalize(m) for m in g]),
                                   atol=1e-6, rtol=1e-5)


def test_the_adamw_groups_step_exactly_as_torch_adamw():
    gen = torch.Generator().manual_seed(3)
    weight, bias = torch.randn(6, 4, generator=gen), torch.randn(6, generator=gen)
    ours = [torch.nn.Parameter(weight.clone()), torch.nn.Parameter(bias.clone())]
    theirs = [torch.nn.Parameter(weight.clone()), torch.nn.Parameter(bias.clone())]
    opt = Muon([{"params": ours[:1], "weight_decay": 0.1}, {"params": ours[1:], "weight_decay": 0.0}],
               lr=3e-3, betas=(0.9, 0.99))
    ref = torch.optim.AdamW([{"params": theirs[:1], "weight_decay": 0.1}, {"params": theirs[1:], "weight_decay": 0.0}],
                            lr=3e-3, betas=(0.9, 0.99))
    for _ in range(4):
        grads = [torch.randn(6, 4, generator=gen), torch.randn(6, generator=gen)]
        for p, q, g in zip(ours, theirs, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    for p, q in zip(ours, theirs, strict=True):
        torch.testing.assert_close(p, q, atol=1e-7, rtol=1e-6)


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=16))
    hidden, embeddings, flat = muon_groups(model, lr=1e-3, muon_lr=0.02, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    matrices = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    assert sorted(names[id(p)] for p in hidden["params"]) == sorted(
        f"transformer.h.{i}.{m}.weight" for i in range(2) for m in matrices)
    assert hidden["use_muon"] and hidden["lr_scale"] == pytest.approx(20.0)
    assert sorted(names[id(p)] for p in embeddings["params"]) == ["transformer.wpe.weight", "transformer.wte.weight"]
    assert all(p.dim() == 1 for p in flat["params"]) and flat["weight_decay"] == 0.0
    every = [id(p) for g in (hidden, embeddings, flat) for p in g["params"]]
    assert len(every) == len(set(every)) == len(list(model.parameters()))  # each once, the tied lm_head once


def test_configure_optimizer_builds_muon_and_a_training_step_lowers_the_loss():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=16))
    opt = configure_optimizer(model, 1e-3, 0.1, torch.device("cpu"), kind="muon", muon_lr=0.02)
    assert isinstance(opt, Muon)
    x = torch.randint(0, 11, (4, 8), generator=torch.Generator().manual_seed(0))
    losses = []
    for _ in range(10):
        for group in opt.param_groups:
            group["lr"] = 1e-2 * group["lr_scale"]
        _, loss = model(x[:, :-1], x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5, losses


def test_a_matrix_without_a_gradient_is_left_out_of_its_stack():
    gen = torch.Generator().manual_seed(5)
    used, unused = (torch.nn.Parameter(torch.randn(8, 8, generator=gen)) for _ in range(2))
    before = unused.detach().clone()
    opt = Muon([{"params": [used, unused], "use_muon": True, "weight_decay": 0.1}], lr=0.02)
    used.grad = torch.randn(8, 8, generator=gen)
    alone = Muon([{"params": [p := torch.nn.Parameter(used.detach().clone())], "use_muon": True,
                   "weight_decay": 0.1}], lr=0.02)
    p.grad = used.grad.clone()
    opt.step()
    alone.step()
    assert torch.equal(unused.detach(), before) and unused not in opt.state
    torch.testing.assert_close(used.detach(), p.detach(), atol=1e-7, rtol=1e-6)
