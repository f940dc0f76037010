"""`python -m rank_sweep.world build [--preset demo] [--seed 0] [--force]` builds the
embedded world into the cache; `info` prints its fingerprint and build metrics."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from rank_sweep.runtime import apply_threads, configure_threads_env, quiet_logging

# Threads sized to the free cores; rare progress redraws in a log. (The package __init__
# has imported torch by now: apply_threads below sets its pool too.)
PLAN = configure_threads_env()


def main(argv: list[str] | None = None) -> int:
    from rank_sweep.world import PRESETS, ensure_world, world_dir, world_fingerprint

    p = argparse.ArgumentParser(prog="python -m rank_sweep.world", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("build", "info", "fingerprint"):
        s = sub.add_parser(name)
        s.add_argument("--preset", default="demo", choices=sorted(PRESETS))
        s.add_argument("--seed", type=int, default=0)
        if name == "build":
            s.add_argument("--force", action="store_true", help="rebuild even if present")
    args = p.parse_args(argv)
    apply_threads(PLAN)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    quiet_logging()  # third-party notices and weight-loading bars, as in the main CLI
    if args.cmd == "fingerprint":
        sys.stdout.write(world_fingerprint(args.preset, args.seed) + "\n")
        return 0
    if args.cmd == "info":
        d = world_dir(args.preset, args.seed)
        if not (d / "world.json").exists():
            sys.stderr.write(f"no world built at {d}; run: python -m rank_sweep.world build\n")
            return 1
        sys.stdout.write((d / "world.json").read_text())
        return 0
    world = ensure_world(args.preset, args.seed, force=args.force)
    info = world.info()
    sys.stdout.write(
        json.dumps(
            {"root": str(world.root), "fingerprint": world.fingerprint,
             "metrics": info["metrics"], "timings_s": info["timings_s"]},
            indent=2,
        ) + "\n"
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
