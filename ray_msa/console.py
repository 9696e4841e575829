"""What a study prints: ray_msa's own lines (trial starts and outcomes, epoch lines, final training, the results
table, errors). The libraries' messages (Ray's token warning, Tune's banner, results path and TensorBoard hint,
MLflow's schema migrations, Optuna's "study created") go to a log file beside the study's Ray results instead,
unless the user asks for them with --verbose: a user should not have to tell a Ray warning from a failure."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LIBRARIES = ("ray", "mlflow", "optuna", "alembic")  # the loggers whose records leave the console
LOG_NAME = "libraries.log"
HANDLER_NAME = "ray_msa-libraries"


def route_library_logs(storage: str | Path, verbose: bool) -> Path | None:
    """Unless `verbose`, every record of the libraries' loggers goes to STORAGE/libraries.log and Tune prints
    nothing of its own; the file's path (None when verbose, where nothing changes)."""
    if verbose:
        return None
    # Tune's default reporter prints its banner, the results path and a TensorBoard hint even at verbose=0; the
    # legacy one, chosen by this variable when a run starts, prints nothing at verbose=0
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # a bar per artifact download (logging a model)
    path = Path(storage).resolve() / LOG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in LIBRARIES:
        _file_only(logging.getLogger(name), handler)
    return path


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also print Ray's, Tune's, MLflow's and Optuna's messages (default: STORAGE/libraries.log)",
    )


def where_library_logs_went(path: Path | None) -> None:
    """The closing line that tells a user where the libraries' messages are (nothing when they were printed)."""
    if path is not None:
        print(f"Ray's, Tune's, MLflow's and Optuna's messages: {path} (--verbose prints them)")


def _file_only(logger: logging.Logger, handler: logging.Handler) -> None:
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)  # as Ray, MLflow and Optuna set theirs: the file is where a user looks later


@contextmanager
def routing_kept_through_ray_init() -> Iterator[bool]:
    """Around ray.init, whose `configure_logging` it yields: False once route_library_logs took Ray's logger,
    so that ray.init only empties it (instead of giving it a console handler). What Ray logs meanwhile (the token
    warning) reaches the routed file through logging's last resort, and the file is Ray's handler again after."""
    handler = next((h for h in logging.getLogger("ray").handlers if h.get_name() == HANDLER_NAME), None)
    if handler is None:
        yield True
        return
    saved = logging.lastResort
    logging.lastResort = handler
    try:
        yield False
    finally:
        logging.lastResort = saved
        _file_only(logging.getLogger("ray"), handler)
