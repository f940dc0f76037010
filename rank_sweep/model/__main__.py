"""Model-side commands.

    python -m rank_sweep.model make-tiny --out DIR [--seed S] [--arch ARCH]
    python -m rank_sweep.model count-params [--ranks 4,8,...]
    python -m rank_sweep.model export-lora --run RUN_ID|DIR --format comfyui|diffusers \\
        --dtype bf16|fp32 --out FILE [--expert high_noise|low_noise]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

DTYPES = {"bf16": "bfloat16", "fp32": "float32", "fp16": "float16"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rank_sweep.model")
    sub = parser.add_subparsers(dest="cmd", required=True)
    tiny = sub.add_parser("make-tiny", help="write a tiny seeded Wan model (diffusers layout)")
    tiny.add_argument("--out", type=Path, required=True)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument(
        "--arch", default="wan2.1_i2v", help="wan2.1_i2v | wan2.2_i2v_a14b | wan2.2_ti2v_5b"
    )
    count = sub.add_parser(
        "count-params",
        help="LoRA params and file sizes per rank of Wan2.1 I2V-14B, Wan2.2 I2V-A14B, TI2V-5B",
    )
    count.add_argument("--ranks", default="4,8,16,32,64,128")
    exp = sub.add_parser("export-lora", help="write a job's LoRA in ComfyUI or diffusers layout")
    exp.add_argument("--run", required=True, help="MLflow run id, or a job / adapter dir")
    exp.add_argument("--format", choices=("comfyui", "diffusers"), default="comfyui")
    exp.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    exp.add_argument("--out", type=Path, required=True)
    exp.add_argument(
        "--expert", default=None, help="Wan2.2 A14B: high_noise | low_noise (default: main file)"
    )
    exp.add_argument("--tracking-uri", default=None, help="MLflow store (default: the project's)")
    return parser


def count_table(ranks: list[int]) -> list[str]:
    """Lines of the per-rank table for every counted model (meta device, real peft)."""
    from rank_sweep.model.adapters import block_linear_names
    from rank_sweep.model.meta import (
        COUNTED_MODELS,
        build_transformer_meta,
        lora_param_table,
        total_params,
    )

    lines = []
    for m in COUNTED_MODELS:
        model = build_transformer_meta(m.config)
        full = total_params(model)
        table = lora_param_table(m.config, ranks, block_linear_names(model))
        title = f"{m.name}: {full:,} parameters per transformer"
        if m.experts > 1:
            title += f" x {m.experts} experts = {m.experts * full:,} (full fine-tune of both)"
        lines += ["", title]
        head = f"{'rank':>5} {'LoRA params':>15} {'% of full':>10} {'bf16 MB':>9}"
        if m.experts > 1:
            head += f" {'both experts':>15} {'both bf16 MB':>13}"
        lines.append(head)
        for r, n in table.items():
            row = f"{r:>5} {n:>15,} {100 * n / full:>9.3f}% {2 * n / 1e6:>9.1f}"
            if m.experts > 1:
                both = m.experts * n
                row += f" {both:>15,} {2 * both / 1e6:>13.1f}"
            lines.append(row)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.cmd == "make-tiny":
        from rank_sweep.model.tiny22 import make_tiny_arch

        out = make_tiny_arch(args.arch, args.out, seed=args.seed)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        print(f"wrote tiny {args.arch} (seed {args.seed}) to {out} ({size / 1e6:.2f} MB)")
        return 0

    if args.cmd == "count-params":
        try:
            ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
        except ValueError:
            parser.error(f"--ranks={args.ranks!r} must be comma-separated integers, e.g. 4,8,16")
        print("\n".join(count_table(ranks)).lstrip("\n"))
        return 0

    from rank_sweep.model.export import export_file, find_adapter_file, resolve_run
    from rank_sweep.model.layout import ModelError
    from rank_sweep.model.spec import _dtype

    try:
        with tempfile.TemporaryDirectory(prefix="rank_sweep-export-") as tmp:
            run_dir = resolve_run(args.run, args.tracking_uri, Path(tmp))
            src = find_adapter_file(run_dir, args.expert)
            out = export_file(src, args.format, _dtype(DTYPES[args.dtype]), args.out)
    except (ModelError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.format} LoRA ({args.dtype}) to {out} ({out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
