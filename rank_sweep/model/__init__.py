"""Wan2.1 I2V model side: `spec` (load parts, conditioning), `tiny` (the embedded model),
`adapters` (LoRA/full, counts, saving), `meta` (14B sizes on the meta device),
`precompute` (latent/embedding cache). Submodules import torch/diffusers lazily."""
