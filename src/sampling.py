"""Choosing the next token: turning the model's last-position logits into one token id per row.

A language model gives a score (logit) for every token in the vocabulary; generation has to pick one.
Each step here is a small pure function on logits of shape (B, V) (B rows of a batch, V the vocabulary
size), so each idea can be read, tested and combined on its own:

    apply_repetition_penalty  make tokens the row already contains less likely (CTRL / HF rule)
    apply_temperature         sharpen (< 1) or flatten (> 1) the distribution
    top_k_filter              keep only the k highest logits
    top_p_filter              keep the smallest set of likeliest tokens holding probability mass >= p
    sample_next_token         temperature, top-k, top-p, then a random draw (or argmax); the repetition
                              penalty, which needs the row's tokens, comes before it (generate.py)
    draw                      the random draw: one token per row, with the given probabilities

Filters never renormalise or sample: they set the logits of dropped tokens to -inf, so a later softmax
gives them probability exactly 0. All arithmetic is in float32, even for float16/bfloat16 logits,
because dividing by a small temperature or summing many tiny probabilities in half precision
overflows or loses the mass that top-p needs.

Ties. When several tokens have the same logit, the token with the lower id counts as "higher": top-k
keeps exactly k tokens (not every token equal to the k-th value), top-p breaks ties the same way, and
greedy decoding picks the lowest id among equal maxima. The result is deterministic, whatever order
the sorting kernel happens to return equal values in.

`check_sampling_args` validates the settings; `generate` calls it once, on entry, and the functions here
trust their arguments after that (no checks once per generated token).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from src.engine.errors import UserError


def check_sampling_args(
    temperature: float, top_k: int | None, top_p: float | None, repetition_penalty: float = 1.0
) -> None:
    """Raise `UserError` (one line) if a sampling setting is out of range; None turns top-k/top-p off."""
    if not isinstance(temperature, numbers.Real) or not math.isfinite(temperature) or temperature < 0:
        raise UserError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (
        isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1
    ):
        raise UserError(f"top_k must be a whole number >= 1 (or None to turn it off), got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, numbers.Real) and 0 < top_p <= 1):
        raise UserError(f"top_p must be in (0, 1] (or None to turn it off), got {top_p!r}")
    if (
        not isinstance(repetition_penalty, numbers.Real)
        or not math.isfinite(repetition_penalty)
        or repetition_penalty <= 0
    ):
        raise UserError(
            f"repetition_penalty must be a finite number > 0 (1 = off), got {repetition_penalty!r}"
        )


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide the logits by `temperature` (> 0). Below 1 the likeliest tokens gain; above 1 all even out.

    Temperature 0 means greedy decoding, which `sample_next_token` does with argmax, never by dividing
    by zero (that gives inf/inf = NaN probabilities), so 0 is a bug here and raises ValueError.
    """
    if not temperature > 0:
        raise ValueError(f"apply_temperature needs temperature > 0, got {temperature!r} (0 means greedy)")
    return logits.float() / temperature  # (B, V)


def _ranked(logits: torch.Tensor) -> torch.Tensor:
    """Token ids of each row from highest to lowest logit; equal logits in increasing id order. (B, V)"""
    # A stable ascending sort of -logits keeps equal values in their original (id) order, which is
    # the documented tie rule; torch.topk and an unstable sort make no such promise.
    return torch.sort(-logits, dim=-1, stable=True).indices  # (B, V)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the `k` highest logits of each row and set the rest to -inf.

    Ties at the k-th value are broken by id: the lower token ids are kept, so exactly k survive
    (thresholding with `logits < kth_value` would keep every tied token). k >= V changes nothing.

        >>> top_k_filter(torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0]]), 2)
        tensor([[-inf, 3., 3., -inf, -inf]])
    """
    logits = logits.float()  # (B, V)
    if k >= logits.size(-1):
        return logits
    dropped = _ranked(logits)[:, k:]  # (B, V - k) ids ranked below the k-th
    return logits.scatter(-1, dropped, float("-inf"))  # (B, V)


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of likeliest tokens whose probabilities add up to >= p.

    Walking down the tokens from likeliest, a token is kept if the mass *before* it is still < p, so
    the token that crosses p is kept and the first token is always kept. Equal probabilities are
    ranked by id, as in `top_k_filter`. p = 1 returns the logits unchanged (not "keep while the float
    sum is < 1", which could drop the tail through rounding). Probabilities are the softmax of the
    given logits, so after `top_k_filter` they are already renormalised over the k survivors.

        probs [0.4, 0.3, 0.2, 0.1],  p = 0.8  ->  mass before each: 0, 0.4, 0.7, 0.9  ->  3 kept
        probs [0.5, 0.41, 0.09],     p = 0.9  ->  mass before each: 0, 0.5, 0.91      ->  2 kept

    A mass before a token that equals p exactly (0.5 + 0.3 with p = 0.8) is decided by float rounding.
    """
    logits = logits.float()  # (B, V)
    if p >= 1:
        return logits
    order = _ranked(logits)  # (B, V) ids, likeliest first
    probs = torch.softmax(logits, dim=-1).gather(-1, order)  # (B, V) probabilities in that order
    # Mass of the strictly likelier tokens: 0 for the first (so it is always kept), then the running sum.
    mass_before = torch.cumsum(probs, dim=-1).roll(1, dims=-1)  # (B, V)
    mass_before[:, 0] = 0.0
    drop_sorted = mass_before >= p  # (B, V) in ranked order
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # (B, V) back in token-id order
    return logits.masked_fill(drop, float("-inf"))  # (B, V)


def apply_repetition_penalty(
    logits: torch.Tensor, previous_ids: torch.Tensor, penalty: float
) -> torch.Tensor:
    """Make every token that already occurs in a row's `previous_ids` (B, T) less likely.

    The CTRL rule (Keskar et al. 2019, as in Hugging Face): a positive logit is divided by `penalty`
    and a negative one multiplied by it, so penalty > 1 always pushes toward "less likely" and
    penalty < 1 rewards repetition. A token counts once however often it occurs. penalty 1 is a no-op.
    """
    logits = logits.float()  # (B, V)
    if penalty == 1:
        return logits
    seen = torch.zeros_like(logits, dtype=torch.bool)  # (B, V)
    seen.scatter_(-1, previous_ids.long(), True)  # (B, V) True where the id occurs in that row
    penalised = torch.where(logits > 0, logits / penalty, logits * penalty)  # (B, V)
    return torch.where(seen, penalised, logits)  # (B, V)


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """Pick the next token of each row from its logits (B, V); returns ids of shape (B, 1).

    temperature 0 is greedy decoding: the argmax, the lowest id among equal maxima, and the
    generator is not used. Otherwise: temperature, then top-k, then top-p on the distribution
    renormalised after top-k (so the filters together always leave the likeliest token), then a draw
    from the softmax with `draw`.

    `generator` is None (PyTorch's global RNG), one `torch.Generator` for the whole batch, or a list of
    generators, one per row, row i drawn with generators[i]. With a list, every row is exactly what a
    batch of one would give with the same generator, so a batch of samples can reproduce samples that
    were drawn one at a time from their own seeds. Generators must be on the device of `logits`.
    The settings are assumed valid (`check_sampling_args`).
    """
    if logits.dim() != 2:
        raise ValueError(f"sample_next_token expects logits of shape (B, V), got {tuple(logits.shape)}")
    logits = logits.float()  # (B, V)
    if temperature == 0:
        return torch.argmax(logits, dim=-1, keepdim=True)  # (B, 1)

    logits = apply_temperature(logits, temperature)  # (B, V)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)  # (B, V)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)  # (B, V)
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    return draw(probs, generator)  # (B, 1)


def draw(
    probs: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None = None
) -> torch.Tensor:
    """One token per row of `probs` (B, V), token i with probability probs[i] / sum(probs); returns (B, 1).

    Inverse-CDF sampling: lay the probabilities end to end on [0, total], throw one uniform number u
    into that interval, and return the token whose segment it lands in: the first i with
    cumsum(probs)[i] >= u. One random number per row, where `torch.multinomial` draws one per token
    (50,257 of them for GPT-2, about 1 ms here: a tenth of a decoding step).
    Two details make it exact: the running sum is in float64, so it never loses small probabilities, and
    u = (1 - r) * total with r uniform in [0, 1) lies in (0, total], so u > 0 skips zero-probability
    tokens at the start, a zero-probability token i is never first with cumsum[i] >= u (its sum equals
    its predecessor's), and u <= total always finds a token.
    The draw happens on the CPU, with CPU generators, whatever device made `probs`: a seed then gives the same
    tokens on every device, and Apple's GPUs (mps) have no float64.
    """
    B = probs.size(0)
    if generator is None or isinstance(generator, torch.Generator):
        r = torch.rand(B, 1, generator=generator, dtype=torch.float64)  # (B, 1)
    elif len(generator) == B:  # row i from its own generator, as if it were drawn alone
        r = torch.cat([torch.rand(1, 1, generator=g, dtype=torch.float64) for g in generator])
    else:
        raise ValueError(f"got {len(generator)} generators for a batch of {B} rows")
    cdf = probs.cpu().double().cumsum(dim=-1)  # (B, V) running total (to the CPU first: mps has no float64)
    u = (1.0 - r) * cdf[:, -1:]  # (B, 1) in (0, total]
    return torch.searchsorted(cdf, u).to(probs.device)  # (B, 1): first i with cdf[i] >= u
