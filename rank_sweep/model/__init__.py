"""Wan model side: `spec` (load parts, conditioning, Wan2.1 and Wan2.2), `tiny`/`tiny22`
(the embedded models), `experts` (Wan2.2 A14B's two experts as one module), `adapters`
(LoRA/full, counts, alpha-safe saving), `export` (ComfyUI/musubi layout), `meta` (14B/5B
sizes on the meta device), `precompute` (latent/embedding cache). Submodules import
torch/diffusers lazily."""
