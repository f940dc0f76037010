"""`python -m rank_sweep.model make-tiny --out DIR [--seed S]` writes the tiny Wan I2V model;
`python -m rank_sweep.model count-params [--ranks 4,8,...]` prints LoRA sizes of the 14B."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rank_sweep.model")
    sub = parser.add_subparsers(dest="cmd", required=True)
    tiny = sub.add_parser(
        "make-tiny", help="write the tiny seeded Wan I2V model (diffusers layout)"
    )
    tiny.add_argument("--out", type=Path, required=True)
    tiny.add_argument("--seed", type=int, default=0)
    count = sub.add_parser(
        "count-params", help="LoRA params of Wan2.1-I2V-14B per rank (meta device)"
    )
    count.add_argument("--ranks", default="4,8,16,32,64,128")
    args = parser.parse_args(argv)

    if args.cmd == "make-tiny":
        from rank_sweep.model.tiny import make_tiny

        out = make_tiny(args.out, seed=args.seed)
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        print(f"wrote tiny Wan I2V (seed {args.seed}) to {out} ({size / 1e6:.2f} MB)")
        return 0

    from rank_sweep.model.blocks import WAN_BLOCK_LINEARS
    from rank_sweep.model.meta import (
        WAN_I2V_14B_CONFIG,
        build_transformer_meta,
        lora_param_table,
        total_params,
    )

    try:
        ranks = [int(r) for r in args.ranks.split(",") if r.strip()]
    except ValueError:
        parser.error(f"--ranks={args.ranks!r} must be comma-separated integers, e.g. 4,8,16")
    full = total_params(build_transformer_meta(WAN_I2V_14B_CONFIG))
    table = lora_param_table(WAN_I2V_14B_CONFIG, ranks, list(WAN_BLOCK_LINEARS))
    print(f"Wan2.1-I2V-14B transformer: {full:,} parameters (full fine-tune)")
    print(f"{'rank':>5} {'LoRA params':>14} {'% of full':>10}")
    for r, n in table.items():
        print(f"{r:>5} {n:>14,} {100 * n / full:>9.3f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
