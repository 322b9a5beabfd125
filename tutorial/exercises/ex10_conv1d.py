"""Exercise 10 (chapter 10): move GPT-2's weights between Hugging Face's layout and ours, written by you.

Fill in the two functions, then check your work from the repository's folder:

    pytest tutorial/exercises/test_ex10_conv1d.py

A Hugging Face GPT-2 file (model.safetensors) and our `GPT.state_dict()` use the same names, apart from
three details, which are the whole exercise:
- four weights per block are stored as (in, out), the transpose of nn.Linear's (out, in): the names end in
  "attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight" and "mlp.c_proj.weight" (GPT.CONV1D_WEIGHTS);
- "lm_head.weight" is the token embedding "transformer.wte.weight" (weight tying): a file may leave it out;
- some files carry old causal-mask buffers, whose names end in ".attn.bias" or ".attn.masked_bias": they are
  no weights at all. (Careful: "attn.c_attn.bias" is a real weight.)
And OpenAI's own file (openai-community/gpt2) was saved without the "transformer." in front of the names:
"h.0.attn.c_attn.weight", "wte.weight", ...

The project's versions are `GPT.load_hf_state_dict` and `GPT.export` in src/model.py. Try not to look until
your tests pass.
"""

import torch

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_to_ours(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 tensors -> a state dict that `GPT.load_state_dict(state, strict=True)` accepts.

    hf_state: {name: tensor} as a Hugging Face file holds them (see above: Conv1D layout, maybe no lm_head,
    maybe mask buffers, maybe no "transformer." prefix).
    Returns {name: tensor} with exactly the names of our `GPT.state_dict()`: every name starts with
    "transformer." except "lm_head.weight", which must be there and hold the token embedding; the four
    Conv1D weights of every block transposed to (out, in); no mask buffers. Do not change the input dict.
    """
    # TODO
    raise NotImplementedError("hf_to_ours (chapter 10)")


def ours_to_hf(our_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our `GPT.state_dict()` -> the tensors of a Hugging Face model.safetensors (what `GPT.export` writes).

    The same names, without "lm_head.weight" (it is the token embedding, stored once); the four Conv1D
    weights of every block transposed to (in, out); every tensor contiguous (safetensors stores a tensor's
    memory as it is, so a transposed view must be copied into its new order: `.contiguous()`).
    """
    # TODO
    raise NotImplementedError("ours_to_hf (chapter 10)")
