"""`python -m rank_sweep.study serve --sweep ID [--port 8765] [--db votes.db]`: the blind A/B page."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from rank_sweep.report.load import ENV_TRACKING_URI
    from rank_sweep.study.store import ENV_VOTES_DB

    p = argparse.ArgumentParser(prog="python -m rank_sweep.study", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve the A/B page for one sweep")
    s.add_argument("--sweep", default=None, help="sweep id; default the most recent sweep")
    s.add_argument(
        "--tracking-uri", default=None, help=f"default ${ENV_TRACKING_URI} or the repo's mlflow.db"
    )
    s.add_argument("--experiment", default="rank_sweep")
    s.add_argument(
        "--db",
        type=Path,
        default=None,
        help=f"vote store; default ${ENV_VOTES_DB} or <repo>/votes.db",
    )
    s.add_argument("--host", default="127.0.0.1", help="bind address (local only by default)")
    s.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from rank_sweep.study.samples import sweep_samples
    from rank_sweep.study.server import Study, make_server
    from rank_sweep.study.store import VoteStore, default_db

    try:
        sweep, samples = sweep_samples(args.tracking_uri, args.experiment, args.sweep)
        study = Study(sweep or "unparented", samples, VoteStore(args.db or default_db()))
    except (FileNotFoundError, ValueError) as exc:  # bad store/sweep/no samples: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = make_server(study, args.host, args.port)
    host, port = server.server_address[:2]
    print(f"A/B study of sweep {study.sweep_id}: {len(study.pairs)} pairs, "
          f"votes -> {study.store.path}\n  open http://{host}:{port}/  (Ctrl-C to stop)", flush=True)  # fmt: skip
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
