"""A worked answer to exercise 6: GPT-2's initialisation, as `GPT._init_weights` in src/model.py does it."""

import math

import torch.nn as nn


def init_gpt2(model: nn.Module) -> None:
    n_layer = model.config.n_layer
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            std = 0.02
            # The projections that add into the residual stream: two per block, 2 * n_layer in all. Scaled, the
            # sum of all their additions is about the same size however deep the model is (chapter 6).
            if name.endswith(("attn.c_proj", "mlp.c_proj")):
                std /= math.sqrt(2 * n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:  # lm_head has no bias
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    # Weight tying: lm_head.weight IS transformer.wte.weight, so drawing one draws both (twice here, as
    # lm_head and as wte: the second draw wins, and both are N(0, 0.02)). Changing the values in place
    # (normal_) keeps the one tensor; making a new nn.Parameter would cut the tie.
