"""`python -m ray_msa.serve --model MODEL [--replicas N] [--host 127.0.0.1 --port P]`: a model online.

A Ray Serve deployment of a study's model on the local Ray, or on the cluster of `ray job submit`.
Requests and responses are the MLflow pyfunc's (`mlflow models serve`): POST `/invocations` with
`{"dataframe_split": {...}}` or `{"dataframe_records": [...]}`, answered `{"predictions": [...]}`.
Each replica loads the model's files from the driver (no replica needs the MLflow store), and
concurrent requests are batched into one forward pass. It binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import ray
import torch
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.scoring_server import infer_and_parse_data
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from ray_msa.errors import InputError, exit_on_input_error
from ray_msa.predict import resolve_model
from ray_msa.serving.stored import RETRAIN
from ray_msa.tracking import default_tracking_uri

APP = "ray_msa"


@serve.deployment(max_ongoing_requests=64)
class ServedModel:
    """One replica: the logged pyfunc rebuilt from its files, answering batched requests."""

    def __init__(self, files: dict[str, bytes], threads: int) -> None:
        torch.set_num_threads(threads)
        self.folder = tempfile.TemporaryDirectory()
        for name, content in files.items():
            path = Path(self.folder.name) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        self.model = mlflow.pyfunc.load_model(self.folder.name)
        self.schema = self.model.metadata.get_input_schema()

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def predict(self, frames: list[pd.DataFrame]) -> list[list[dict[str, Any]]]:
        """Requests waiting together run as one frame; each gets its own rows back."""
        joined = pd.concat(frames, ignore_index=True)
        rows = self.model.predict(joined).to_dict(orient="records")
        out, start = [], 0
        for frame in frames:
            out.append(rows[start : start + len(frame)])
            start += len(frame)
        return out

    async def __call__(self, request: Request) -> JSONResponse:
        try:
            frame = infer_and_parse_data(await request.json(), self.schema)
        except (MlflowException, ValueError, KeyError, TypeError) as err:
            return JSONResponse({"error_code": "BAD_REQUEST", "message": str(err).splitlines()[0]}, status_code=400)
        return JSONResponse({"predictions": await self.predict(frame)})


def model_files(model: str, tracking_uri: str) -> dict[str, bytes]:
    """Every file of the logged model, by its path inside the model folder."""
    uri = resolve_model(model, tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        if not (local / "MLmodel").is_file() or "python_function" not in (local / "MLmodel").read_text():
            raise InputError(model, "--model", "not an MLflow pyfunc model", RETRAIN)
        return {str(p.relative_to(local)): p.read_bytes() for p in local.rglob("*") if p.is_file()}


def deploy(
    files: dict[str, bytes], replicas: int = 1, cpus: float = 1.0, host: str = "127.0.0.1", port: int = 8000
) -> str:
    """Start the deployment on the connected Ray cluster: the URL that answers requests."""
    serve.start(http_options={"host": host, "port": port})
    app = ServedModel.options(num_replicas=replicas, ray_actor_options={"num_cpus": cpus}).bind(
        files, max(1, int(cpus))
    )
    serve.run(app, name=APP, route_prefix="/invocations")
    return f"http://{host}:{port}/invocations"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ray_msa.serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="models:/m-..., runs:/RUN/model, or a study run id")
    parser.add_argument("--replicas", type=int, default=1, help="model replicas (default 1)")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0, help="CPUs each replica reserves (default 1)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"), help="MLflow store (default ./mlruns)"
    )
    args = parser.parse_args(argv)
    if args.replicas < 1 or args.cpus_per_replica <= 0:
        raise InputError(
            "--replicas", "value", "at least one replica, each with a positive --cpus-per-replica", "change the flags"
        )
    return args


@exit_on_input_error
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per download
    files = model_files(args.model, args.tracking_uri or default_tracking_uri())
    ray.init(address=os.environ.get("RAY_ADDRESS"))
    url = deploy(files, args.replicas, args.cpus_per_replica, args.host, args.port)
    print(f"serving {args.model} with {args.replicas} replica(s) at {url} (Ctrl-C stops it)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
