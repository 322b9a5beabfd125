"""A worked answer to exercise 10: `GPT.load_hf_state_dict` and `GPT.export` (src/model.py), on plain dicts."""

import torch

CONV1D_WEIGHTS = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
MASK_BUFFERS = (".attn.bias", ".attn.masked_bias")  # the leading "." keeps "attn.c_attn.bias" out


def hf_to_ours(hf_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    ours = {}
    for name, tensor in hf_state.items():
        if name.endswith(MASK_BUFFERS) or name == "lm_head.weight":
            continue  # mask buffers are no weights; lm_head is tied to wte below
        if not name.startswith("transformer."):
            name = "transformer." + name  # OpenAI's file: "h.0.attn.c_attn.weight"
        # Decide by the name, never by the shape: attn.c_proj is (C, C), square, so a transpose forgotten
        # there changes no shape and raises no error. It only makes the model wrong.
        if name.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()  # (in, out) -> (out, in)
        ours[name] = tensor
    ours["lm_head.weight"] = ours["transformer.wte.weight"]  # weight tying: one tensor, two names
    return ours


def ours_to_hf(our_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    hf = {}
    for name, tensor in our_state.items():
        if name == "lm_head.weight":
            continue  # the same tensor as transformer.wte.weight: stored once
        if name.endswith(CONV1D_WEIGHTS):
            tensor = tensor.t()  # (out, in) -> (in, out); .t() only swaps strides ...
        hf[name] = tensor.contiguous()  # ... so copy the numbers into that order before saving
    return hf
