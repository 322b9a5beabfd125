"""Back-of-the-envelope sizes of a GPT: parameters, memory, and FLOPs per token.

Knowing these before starting saves surprises: whether a model fits in memory, and how fast a step
*should* be (model FLOP/s divided by the hardware's peak tells how well the hardware is used).

Parameters (C = d_model, L = n_layer, V = vocab, T = block_size), each block:
    attention: c_attn C*3C + 3C, c_proj C*C + C;  MLP: c_fc C*4C + 4C, c_proj 4C*C + C;  2 LayerNorms: 4C
    = 12C^2 + 13C.  Whole model: V*C (wte, shared with lm_head) + T*C (wpe) + L*(12C^2 + 13C) + 2C (ln_f).

Training FLOPs per token: 6 per parameter of the matrix multiplications (2 forward, 4 backward), plus
attention's own matmuls (q.k and weights.v): 6 * L * 2 * C * T per token at full context, halved by the
causal mask on average, here counted in full as in the PaLM paper's formula (6N + 12*L*C*T).
"""

from __future__ import annotations


def param_count(vocab_size: int, block_size: int, n_layer: int, d_model: int) -> int:
    """Number of parameters of a GPT-2 of these sizes (the tied wte/lm_head counted once)."""
    C = d_model
    return vocab_size * C + block_size * C + n_layer * (12 * C * C + 13 * C) + 2 * C


def flops_per_token(config, seq_len: int | None = None) -> float:
    """Training FLOPs per token (forward + backward): 6N for the weights + 12*L*C*T for attention.

    N excludes the position embeddings (a lookup, not a matmul) but includes lm_head (V*C).
    """
    T = seq_len or config.block_size
    n_matmul = param_count(config.vocab_size, 0, config.n_layer, config.d_model)
    return 6 * n_matmul + 12 * config.n_layer * config.d_model * T


def memory_estimate(config, batch_size: int, seq_len: int | None = None, train: bool = True) -> dict[str, float]:
    """Rough bytes for weights, gradients, AdamW state (all float32) and activations of one micro-batch.

    Activations: per layer about 34 * B * T * C bytes in float32 with fused attention (the inputs that
    backward needs: LayerNorm inputs, q/k/v, the MLP's 4C hidden layer before and after GELU, ...),
    plus the logits B * T * V (kept twice: logits and their float32 copy for the loss).
    """
    T = seq_len or config.block_size
    n = param_count(config.vocab_size, config.block_size, config.n_layer, config.d_model)
    weights = 4 * n
    sizes = {"parameters": n, "weights": weights}
    if train:
        sizes["gradients"] = weights
        sizes["optimizer"] = 2 * weights  # AdamW keeps two running averages per parameter
        per_layer = 34 * batch_size * T * config.d_model
        sizes["activations"] = config.n_layer * per_layer + 2 * 4 * batch_size * T * config.vocab_size
    return sizes


def describe(config, batch_size: int = 1, seq_len: int | None = None, train: bool = True) -> str:
    """One line for the run header, e.g. '124,439,808 parameters: weights 0.50 GB, ... total ~2.9 GB'."""
    sizes = memory_estimate(config, batch_size, seq_len, train)
    parts = [f"{name} {value / 1e9:.2f} GB" for name, value in sizes.items() if name != "parameters"]
    total = sum(v for k, v in sizes.items() if k != "parameters")
    return f"{sizes['parameters']:,} parameters: {', '.join(parts)}; total ~{total / 1e9:.2f} GB"
