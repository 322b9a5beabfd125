"""Exercise 6 (chapter 6): GPT-2's initialisation, written by you.

Fill in the function, then check your work from the repository's folder:

    pytest tutorial/exercises/test_ex06_gpt2_init.py

The tests build a `GPT` (src/model.py), fill every one of its numbers with nonsense, call your function,
and look at what it left. The rule: do not call the project's `GPT._init_weights` (the tests switch it off:
it is the answer key). `torch.nn.init.normal_`, `torch.nn.init.zeros_` and `torch.nn.init.ones_` (or the
tensor methods `.normal_()`, `.zero_()`, `.fill_()`) are all you need.
"""

import torch.nn as nn


def init_gpt2(model: nn.Module) -> None:
    """Set every parameter of `model`, a `src.model.GPT`, in place, the way GPT-2 starts:

    - every nn.Linear and nn.Embedding weight: normal, mean 0, standard deviation 0.02;
    - except the two projections in each block that write into the residual stream, `attn.c_proj` and
      `mlp.c_proj`: standard deviation 0.02 / sqrt(2 * n_layer) (n_layer is `model.config.n_layer`);
    - every bias: 0;
    - every nn.LayerNorm: weight 1, bias 0.

    `lm_head.weight` and `transformer.wte.weight` are one tensor (weight tying): it must stay one tensor.
    Returns nothing.

    Hint: `model.named_modules()` gives every module with its name ("transformer.h.0.attn.c_proj", ...), and
    `isinstance(module, nn.Linear)` tells what it is.
    """
    # TODO
    raise NotImplementedError("init_gpt2 (chapter 6)")
