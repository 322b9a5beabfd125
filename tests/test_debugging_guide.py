"""The numbers of the debugging guide (tutorial/debugging.md), measured: each classic mistake is made on a copy
of the model, and its symptom measured next to the correct model's.

Nothing in src/ is edited. A mistake is made by replacing one method of one model object (the attention's or
the MLP's `forward`, written out below with the mistake as an option), by replacing the final LayerNorm with
an identity, by loading a state dict without a transpose, or by training on the wrong targets. The written-out
attention, without its mistake, is first checked to compute exactly the model's attention, so every difference
measured comes from the mistake alone.

The symptoms, as a learner meets them:
- the loss after 60 training steps on a small English-like text (the correct model, and each broken one, from
  the same initial weights and the same batches);
- the gap to Hugging Face `transformers`' logits on the same random weights (its own GPT-2 init);
- causality: does changing the *last* token change the logits at an earlier position? (It must not.)
- evaluation: does the same batch give the same loss twice?

Every number the guide states is asserted here, with the tolerance the guide gives ("about 0.4") or as a range.
"""

from __future__ import annotations

import math
import types

import pytest
import torch
import torch.nn as nn
from torch.nn import functional as F

from src.model import GPT
from src.tokenizer import CharTokenizer

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

T, B, STEPS = 32, 16, 60  # context, batch, training steps
SIZES = dict(block_size=T, n_layer=2, n_head=4, d_model=32)
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


# --- the mistakes ----------------------------------------------------------------------------------------------


def attention_forward(self, x, cache=None, layer=0, attention=None, *, mask_value=float("-inf"), heads="permute"):
    """CausalSelfAttention.forward written out, with two classic mistakes as options.

    mask_value: what the future gets before the softmax (-inf is right; -1e4 is the mistake).
    heads: "permute" cuts the channels into heads, (B, T, C) -> (B, T, nh, hs) -> (B, nh, T, hs) (right);
           "view" reshapes (B, T, C) straight to (B, nh, T, hs) (the mistake: it mixes tokens and heads).
    """
    Bx, Tx, C = x.shape
    nh, hs = self.n_head, C // self.n_head
    q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
    if heads == "permute":
        q, k, v = (t.view(Bx, Tx, nh, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
    else:
        q, k, v = (t.reshape(Bx, nh, Tx, hs) for t in (q, k, v))  # (B, nh, T, hs), rows from several tokens
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B, nh, T, T)
    future = torch.ones(Tx, Tx, dtype=torch.bool, device=x.device).triu(diagonal=1)
    weights = F.softmax(scores.masked_fill(future, mask_value), dim=-1)
    y = (weights @ v).transpose(1, 2).reshape(Bx, Tx, C)  # (B, T, C)
    return self.resid_dropout(self.c_proj(y))


def with_attention(model: GPT, **mistake) -> GPT:
    for block in model.transformer.h:
        block.attn.forward = types.MethodType(
            lambda self, x, cache=None, layer=0, attention=None: attention_forward(self, x, **mistake), block.attn)
    return model


def with_exact_gelu(model: GPT) -> GPT:
    """GELU's exact (erf) form in every MLP, instead of GPT-2's tanh approximation."""
    for block in model.transformer.h:
        block.mlp.forward = types.MethodType(lambda self, x: self.dropout(self.c_proj(F.gelu(self.c_fc(x)))),
                                             block.mlp)
    return model


def without_final_layernorm(model: GPT) -> GPT:
    model.transformer.ln_f = nn.Identity()
    return model


# --- measuring -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tiny_text):
    """(vocabulary size, train ids, validation ids) of the tests' English-like text, split 90/10."""
    tok = CharTokenizer.from_text(tiny_text)
    ids = torch.tensor(tok.encode(tiny_text))
    cut = int(0.9 * len(ids))
    return tok.vocab_size, ids[:cut], ids[cut:]


def batch(ids: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(len(ids) - T - 1, (B,), generator=generator)
    x = torch.stack([ids[s : s + T] for s in starts])  # (B, T)
    y = torch.stack([ids[s + 1 : s + T + 1] for s in starts])  # (B, T): the next characters
    return x, y


def new_gpt(vocab_size: int, dropout: float = 0.0) -> GPT:
    torch.manual_seed(0)  # every variant starts from the same weights
    return GPT(vocab_size=vocab_size, dropout=dropout, **SIZES)


def train(model: GPT, train_ids: torch.Tensor, shift: bool = True) -> float:
    """STEPS steps of AdamW on the same batches for every variant; returns the last batch's loss."""
    generator = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(STEPS):
        x, y = batch(train_ids, generator)
        _, loss = model(x, y if shift else x)  # shift=False: the mistake, targets = the inputs themselves
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return loss.item()


@torch.no_grad()
def val_loss(model: GPT, val_ids: torch.Tensor, eval_mode: bool = True) -> float:
    """The mean loss over 20 fixed validation batches, predicting the next character."""
    model.train(not eval_mode)
    generator = torch.Generator().manual_seed(123)
    losses = [model(*batch(val_ids, generator))[1].item() for _ in range(20)]
    model.eval()
    return sum(losses) / len(losses)


@torch.no_grad()
def future_leak(model: GPT, vocab_size: int) -> float:
    """How much the logits at positions 0..T-2 change when only the token at T-1 changes: 0 for a causal model."""
    model.eval()
    idx = torch.randint(vocab_size, (1, T), generator=torch.Generator().manual_seed(5))
    changed = idx.clone()
    changed[0, -1] = (idx[0, -1] + 1) % vocab_size
    return (model(idx)[0][0, :-1] - model(changed)[0][0, :-1]).abs().max().item()


@pytest.fixture(scope="module")
def trained(data):
    """{variant: (val loss after STEPS steps, future leak)}, each trained from the same start on the same batches."""
    vocab_size, train_ids, val_ids = data
    variants = {
        "correct": new_gpt(vocab_size),
        "no final LayerNorm": without_final_layernorm(new_gpt(vocab_size)),
        "exact GELU": with_exact_gelu(new_gpt(vocab_size)),
        "view for the heads": with_attention(new_gpt(vocab_size), heads="view"),
    }
    results = {}
    for name, model in variants.items():
        train(model, train_ids)
        results[name] = (val_loss(model, val_ids), future_leak(model, vocab_size))
    print({name: (round(loss, 3), f"{leak:.1e}") for name, (loss, leak) in results.items()})
    return results


@pytest.fixture(scope="module")
def oracle():
    """A random GPT-2 of Hugging Face's (its own init), its tensors, some ids and its logits on them."""
    hf = hf_gpt2()
    idx = torch.randint(71, (2, T), generator=torch.Generator().manual_seed(1))  # (B, T)
    with torch.no_grad():
        logits = hf(idx).logits  # (2, T, 71)
    return hf.state_dict(), idx, logits


def ours_from(tensors: dict, transpose: tuple[str, ...] = CONV1D) -> GPT:
    """Our GPT with Hugging Face's tensors, transposing the weights named in `transpose` (all four is right)."""
    model = GPT(vocab_size=71, block_size=T, n_layer=2, n_head=4, d_model=64)
    state = {name: tensor.t() if name.endswith(transpose) else tensor for name, tensor in tensors.items()
             if not name.endswith((".attn.bias", ".attn.masked_bias"))}
    state["lm_head.weight"] = state["transformer.wte.weight"]
    model.load_state_dict(state)
    return model.eval()


def parity_gap(model: GPT, oracle) -> float:
    _, idx, expected = oracle
    with torch.no_grad():
        return (model(idx)[0] - expected).abs().max().item()


def hf_gpt2(std: float | None = None):
    """A random GPT-2 of Hugging Face's: its own init (std 0.02), or every matrix drawn again from N(0, std),
    larger weights, as a trained model has."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=71, n_positions=T, n_embd=64, n_layer=2, n_head=4)
    hf = transformers.GPT2LMHeadModel(config).eval()
    if std is not None:
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for p in hf.parameters():  # a tied tensor (wte = lm_head) comes once
                if p.dim() == 2:
                    p.normal_(0.0, std, generator=generator)
    return hf


# --- the tests ---------------------------------------------------------------------------------------------------


def test_the_written_out_attention_without_a_mistake_is_the_models(data, oracle):
    vocab_size, _, _ = data
    idx = torch.randint(vocab_size, (2, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (new_gpt(vocab_size)(idx)[0] - with_attention(new_gpt(vocab_size))(idx)[0]).abs().max() < 1e-6
    assert parity_gap(ours_from(oracle[0]), oracle) < 1e-5  # the correct model agrees with transformers


def test_no_final_layernorm(data, trained, oracle):
    assert data[0] == 48 and abs(trained["correct"][0] - 2.56) < 0.05  # "48 distinct characters", "2.56"
    gap = parity_gap(without_final_layernorm(ours_from(oracle[0])), oracle)
    largest = oracle[2].abs().max().item()
    assert abs(largest - 1.06) < 0.01  # "logits whose largest is about 1.06" (the same seed, the same init)
    assert 0.7 < gap / largest < 1.3  # "about as large as the logits themselves"
    loss, correct = trained["no final LayerNorm"][0], trained["correct"][0]
    print(f"no final LayerNorm: gap {gap:.2f} (largest logit {largest:.2f}), val loss {loss:.3f} vs {correct:.3f}")
    assert 0.3 < loss - correct < 0.6  # "about 0.45 higher after 60 steps"


def test_a_minus_1e4_mask_instead_of_minus_inf(data, oracle):
    vocab_size, _, _ = data
    broken = with_attention(ours_from(oracle[0]), mask_value=-1e4)
    assert parity_gap(broken, oracle) < 1e-5  # no symptom at all at ordinary sizes ...
    assert future_leak(with_attention(new_gpt(vocab_size), mask_value=-1e4), vocab_size) == 0.0
    leaks = {}
    for mask_value in (-1e4, float("-inf")):  # ... until the scores are huge: query and key weights x 1000
        model = with_attention(new_gpt(vocab_size), mask_value=mask_value)
        with torch.no_grad():
            for block in model.transformer.h:
                block.attn.c_attn.weight[: 2 * SIZES["d_model"]] *= 1000  # the q and k rows
        leaks[mask_value] = future_leak(model, vocab_size)
    print(leaks)
    assert leaks[float("-inf")] == 0.0 and 3e-4 < leaks[-1e4] < 3e-3  # "about 1e-3"


def test_the_exact_gelu_instead_of_the_tanh_approximation(trained, oracle):
    correct_gap = parity_gap(ours_from(oracle[0]), oracle)
    gap = parity_gap(with_exact_gelu(ours_from(oracle[0])), oracle)
    hf = hf_gpt2(std=0.1)
    with torch.no_grad():
        larger = (hf.state_dict(), oracle[1], hf(oracle[1]).logits)
    assert parity_gap(ours_from(larger[0]), larger) < 1e-5
    spread_gap = parity_gap(with_exact_gelu(ours_from(larger[0])), larger)
    print(f"exact GELU: gap {gap:.1e} (correct model {correct_gap:.1e}), larger weights {spread_gap:.1e}")
    assert correct_gap < 1e-6 and 3e-6 < gap < 1e-4 and 2e-4 < spread_gap < 3e-3  # "about 1e-5 ... 7e-4"
    assert abs(trained["exact GELU"][0] - trained["correct"][0]) < 0.01  # trains as well from scratch


def test_a_missing_conv1d_transpose(oracle):
    with pytest.raises(RuntimeError) as refused:  # no transpose at all: 3 of the 4 weights per block refuse
        ours_from(oracle[0], transpose=())
    mismatches = [line for line in str(refused.value).splitlines() if "size mismatch" in line]
    assert len(mismatches) == 6 and not any("attn.c_proj" in line for line in mismatches)  # 3 x 2 blocks
    square_forgotten = ours_from(oracle[0], transpose=("attn.c_attn.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"))
    gap = parity_gap(square_forgotten, oracle)
    print(f"attn.c_proj not transposed: gap {gap:.2f}")
    assert 0.2 < gap < 0.5  # "about 0.3, on logits of about 1"


def test_dropout_left_on_at_evaluation(data):
    vocab_size, train_ids, val_ids = data
    model = new_gpt(vocab_size, dropout=0.2)
    train(model, train_ids)
    x, _ = batch(val_ids, torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.train()
        first, second = model(x)[0], model(x)[0]
        model.eval()
        third, fourth = model(x)[0], model(x)[0]
    assert torch.equal(third, fourth)  # eval mode: the same logits, bit for bit
    print(f"dropout 0.2, training mode: the same batch twice, logits apart by {(first - second).abs().max():.2f}")
    assert (first - second).abs().max() > 0.5  # training mode: "the same batch, logits apart by more than 0.5"
    in_eval = val_loss(model, val_ids)
    in_train = [val_loss(model, val_ids, eval_mode=False) for _ in range(2)]
    print(f"dropout 0.2: val loss in eval mode {in_eval:.3f}, in training mode {in_train}")
    assert in_train[0] != in_train[1]  # two evaluations of the same batches disagree
    assert 0.02 < min(in_train) - in_eval < 0.1  # "about 0.05 higher"


def test_view_instead_of_permute_for_the_heads(data, trained, oracle):
    loss, leak = trained["view for the heads"]
    correct_loss, correct_leak = trained["correct"]
    print(f"view for the heads: leak {leak:.3f}, val loss {loss:.3f} (correct {correct_loss:.3f})")
    assert correct_leak == 0.0 and 0.02 < leak < 0.1  # the future leaks into earlier positions: "about 0.05"
    assert abs(loss - correct_loss) < 0.05  # the loss hardly shows it yet: "within 0.05"
    gap = parity_gap(with_attention(ours_from(oracle[0]), heads="view"), oracle)
    print(f"view for the heads: gap {gap:.2f}")
    assert 0.2 < gap < 0.4  # "about 0.3"
    vocab_size = data[0]
    one_head = dict(SIZES, n_head=1)
    torch.manual_seed(0)
    plain = GPT(vocab_size=vocab_size, **one_head).eval()
    torch.manual_seed(0)
    viewed = with_attention(GPT(vocab_size=vocab_size, **one_head), heads="view").eval()
    idx = torch.randint(vocab_size, (2, T), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (plain(idx)[0] - viewed(idx)[0]).abs().max() < 1e-6  # "with one head the two are the same"


def test_targets_not_shifted(data):
    vocab_size, train_ids, val_ids = data
    model = new_gpt(vocab_size)
    last = train(model, train_ids, shift=False)  # y = x: "predict" the character the model is reading
    real = val_loss(model, val_ids)  # the loss on the next character, which is the task
    ids = model.generate([0, 1, 2], max_new_tokens=20, temperature=0)
    print(f"targets = inputs: training loss {last:.3f}, loss on the next character {real:.2f}, greedy {ids}")
    assert abs(last - 0.17) < 0.1  # "the training loss is about 0.17"
    assert real > math.log(vocab_size) and abs(real - 5.9) < 0.5  # "5.9: worse than a uniform guess"
    assert len(set(ids[3:])) == 1  # greedy generation repeats one character forever
