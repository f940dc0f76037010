"""LoRA files in the layouts Wan users load, converted from the diffusers file a job wrote.

ComfyUI and musubi-tuner read the original Wan module names with a `diffusion_model.`
prefix (`blocks.N.self_attn.q`, `cross_attn.k_img`, `ffn.0`, ...), `lora_down`/`lora_up`
weights and one `.alpha` per module; their forward scales by alpha / rank, the same rule
diffusers' `_convert_non_diffusers_wan_lora_to_diffusers` undoes. The files written here
carry the trained scale inside lora_up with alpha = rank, so every one of those loaders
applies exactly the trained update. Names hold for Wan2.1 I2V-14B, Wan2.2 I2V-A14B (one
file per expert) and TI2V-5B alike: the latter two simply have no `k_img`/`v_img`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from rank_sweep.model.layout import ModelError
from rank_sweep.track import contract as C

log = logging.getLogger(__name__)

COMFY_WEIGHT_NAME = "lora_comfyui.safetensors"
FORMATS = ("comfyui", "diffusers")

# diffusers module path inside a block -> original Wan (ComfyUI/musubi) module path
DIFFUSERS_TO_WAN = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "attn2.add_k_proj": "cross_attn.k_img",
    "attn2.add_v_proj": "cross_attn.v_img",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
}
_KEY = re.compile(r"^(?:transformer\.)?blocks\.(\d+)\.(.+)\.lora_([AB])\.weight$")


def to_comfyui(
    layers: dict[str, torch.Tensor], rank: int, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """ComfyUI/musubi tensors from alpha-safe (scale already folded) diffusers tensors."""
    out: dict[str, torch.Tensor] = {}
    for key, value in layers.items():
        m = _KEY.match(key)
        if m is None or m.group(2) not in DIFFUSERS_TO_WAN:
            raise ModelError(f"LoRA key {key!r} has no ComfyUI/musubi name")
        block, module, ab = m.groups()
        base = f"diffusion_model.blocks.{block}.{DIFFUSERS_TO_WAN[module]}"
        out[f"{base}.{'lora_down' if ab == 'A' else 'lora_up'}.weight"] = value.to(dtype)
        out[f"{base}.alpha"] = torch.tensor(float(rank), dtype=dtype)
    return out


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path, header: dict) -> Path:
    """Atomic write (temp file + rename) so a killed job never leaves half a file."""
    from safetensors.torch import save_file

    from rank_sweep.utils.atomic import atomic_file

    path = Path(path)
    with atomic_file(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=header)
    return path


def adapter_metadata(header: dict[str, str]) -> dict:
    """The transformer's peft config from a diffusers LoRA header (stored flattened as
    `transformer.<field>` keys of the JSON under `lora_adapter_metadata`)."""
    raw = json.loads(header.get("lora_adapter_metadata", "{}"))
    return {
        k.removeprefix("transformer."): v for k, v in raw.items() if k.startswith("transformer.")
    }


def read_diffusers_lora(path: Path) -> tuple[dict[str, torch.Tensor], int, dict[str, str]]:
    """(alpha-safe `transformer.`-keyed tensors in fp32, rank, header) of a diffusers LoRA file.

    Files whose metadata still carries a trained alpha (written before the scale was folded)
    are folded here, so the export is right for those too."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k).float() for k in f.keys()}
    downs = [v for k, v in tensors.items() if ".lora_A." in k]
    if not downs:
        raise ModelError(f"{path} holds no LoRA (lora_A) tensors")
    rank = int(downs[0].shape[0])
    meta = adapter_metadata(header)
    alpha = float(meta.get("lora_alpha", rank))
    scale = alpha / (rank**0.5 if meta.get("use_rslora") else rank)
    if abs(scale - 1.0) > 1e-12:
        log.info("%s: folding scale %.6g into lora_B", path.name, scale)
        tensors = {k: v * scale if ".lora_B." in k else v for k, v in tensors.items()}
    return tensors, rank, header


def export_file(src: Path, fmt: str, dtype: torch.dtype, out: Path) -> Path:
    """Convert one diffusers-layout LoRA file into `fmt` at `dtype`, alpha-safe."""
    from diffusers import WanImageToVideoPipeline

    if fmt not in FORMATS:
        raise ModelError(f"--format={fmt!r} is not supported; allowed: {', '.join(FORMATS)}")
    tensors, rank, header = read_diffusers_lora(Path(src))
    keep = {k: v for k, v in header.items() if k.startswith(C.TAG_PREFIX)}
    keep["rank_sweep.dtype"] = str(dtype).removeprefix("torch.")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "comfyui":
        return write_safetensors(to_comfyui(tensors, rank, dtype), out, keep)
    meta = adapter_metadata(header)
    meta.update(lora_alpha=rank, use_rslora=False, rank_pattern={}, alpha_pattern={})
    layers = {k.removeprefix("transformer."): v.to(dtype) for k, v in tensors.items()}
    from rank_sweep.model.adapters import _append_header
    from rank_sweep.utils.atomic import atomic_file

    with atomic_file(out) as tmp:
        WanImageToVideoPipeline.save_lora_weights(
            tmp.parent,
            transformer_lora_layers=layers,
            weight_name=tmp.name,
            transformer_lora_adapter_metadata=meta,
        )
        _append_header(tmp, keep)
    return out


def find_adapter_file(run_dir: Path, expert: str | None = None) -> Path:
    """The diffusers LoRA file in a job dir (`<dir>/adapter/` or the adapter dir itself)."""
    from rank_sweep.model.adapters import LORA_WEIGHT_NAME

    run_dir = Path(run_dir)
    name = LORA_WEIGHT_NAME
    if expert:
        name = LORA_WEIGHT_NAME.replace(".safetensors", f"_{expert}.safetensors")
    for cand in (run_dir / "adapter" / name, run_dir / name):
        if cand.is_file():
            return cand
    if expert:  # a single trained expert is stored under the plain name; check its header
        plain = find_adapter_file(run_dir)
        from safetensors import safe_open

        with safe_open(str(plain), framework="pt") as f:
            if (f.metadata() or {}).get("rank_sweep.expert") == expert:
                return plain
    raise ModelError(f"no {name} under {run_dir} or {run_dir / 'adapter'}")


def resolve_run(run: str, tracking_uri: str | None, dst: Path) -> Path:
    """A run dir as given, else the `adapter/` artifacts of MLflow run `run`, downloaded."""
    path = Path(run).expanduser()
    if path.exists():
        return path
    from mlflow.tracking import MlflowClient

    from rank_sweep.paths import tracking_uri as default_tracking_uri

    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri=uri)
    try:
        client.get_run(run)
    except Exception as e:  # noqa: BLE001 - one line for the CLI, whatever MLflow raised
        raise ModelError(f"--run {run!r} is neither a directory nor an MLflow run in {uri}") from e
    dst.mkdir(parents=True, exist_ok=True)
    local = client.download_artifacts(run, "adapter", str(dst))
    return Path(local)
