"""`python -m ray_msa.mlflow_server`: the shared MLflow tracking server for a cluster's studies.

A SQL store (SQLite file by default; any SQLAlchemy URI, e.g. PostgreSQL, with --store-uri)
and artifacts served through the server, so workers on any node log to one place with
`--tracking-uri http://HOST:PORT`. Binds 127.0.0.1 unless --host says otherwise: on a
cluster, the head's private address (reachable inside the VPC, never 0.0.0.0 on a public
interface); from a laptop, reach it through an SSH tunnel.

    python -m ray_msa.mlflow_server                       # http://127.0.0.1:5000, ./mlflow_server/
    python -m ray_msa.mlflow_server --host 10.0.1.12 --root /mnt/shared/mlflow
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"


def server_command(root: Path, host: str = DEFAULT_HOST, port: int = 5000, store_uri: str | None = None) -> list[str]:
    """The `mlflow server` command line (kept separate so tests can check what it binds)."""
    root = root.resolve()
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store_uri or f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "2",
        # uvicorn restarts a worker that has not answered its health check in 5 s; on a loaded head node
        # loading MLflow's app takes longer, and the server restarted its workers forever without serving
        "--uvicorn-opts",
        "--timeout-worker-healthcheck 120",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m ray_msa.mlflow_server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--root", default="mlflow_server", help="folder for the SQLite store and the artifacts")
    parser.add_argument(
        "--store-uri",
        help="SQLAlchemy URI of the run store instead of SQLite (e.g. postgresql://user@db/mlflow; "
        "give the password through PGPASSFILE or the driver's environment, not here)",
    )
    args = parser.parse_args(argv)
    root = Path(args.root)
    (root / "artifacts").mkdir(parents=True, exist_ok=True)
    command = server_command(root, args.host, args.port, args.store_uri)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"note: MLflow binds {args.host}: anyone who can reach it can read and write runs; keep it on a "
            f"private network",
            flush=True,
        )
    print(f"MLflow tracking server: --tracking-uri http://{args.host}:{args.port}", flush=True)
    os.execv(command[0], command)


if __name__ == "__main__":
    main()
