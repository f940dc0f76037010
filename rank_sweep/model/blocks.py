"""Names of the Linear layers inside one Wan transformer block (diffusers' module names).

A model fact shared by the LoRA target list (`lora.target_modules` defaults to all of
them through the `${wan_block_linears:}` config resolver), the parameter counts and the
export to other tools' layouts. Kept free of torch so the config can import it cheaply.
"""

from __future__ import annotations

# attn1: self-attention; attn2: cross-attention to text (to_k/to_v) and, in I2V, to the
# CLIP image tokens (add_k_proj/add_v_proj); ffn: the GELU MLP.
WAN_ATTENTION_LINEARS = (
    "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
    "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0",
    "attn2.add_k_proj", "attn2.add_v_proj",
)  # fmt: skip
WAN_FFN_LINEARS = ("ffn.net.0.proj", "ffn.net.2")
WAN_BLOCK_LINEARS = (*WAN_ATTENTION_LINEARS, *WAN_FFN_LINEARS)
