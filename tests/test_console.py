"""A study's console holds ray_msa's lines; the libraries' messages go to a file unless --verbose."""

from __future__ import annotations

import logging
import os
import sys

from ray_msa.console import LIBRARIES, route_library_logs, routing_kept_through_ray_init


def test_library_records_go_to_the_file_not_the_console(tmp_path, capfd, library_loggers):
    for name in LIBRARIES:  # each with a console handler, as Ray, MLflow and Optuna give theirs when imported
        logging.getLogger(name).addHandler(logging.StreamHandler(sys.stderr))
    path = route_library_logs(tmp_path / "ray_results", verbose=False)
    assert path == (tmp_path / "ray_results" / "libraries.log").resolve()
    logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
    logging.getLogger("optuna.storages._in_memory").info("A new study created in memory")
    logging.getLogger("ray.tune.tune").warning("Wrote the experiment state")
    logging.getLogger("alembic.runtime.migration").info("Running upgrade")
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    written = path.read_text()
    for line in ("Creating initial MLflow", "A new study created", "Wrote the experiment state", "Running upgrade"):
        assert line in written
    assert os.environ["RAY_AIR_NEW_OUTPUT"] == "0"  # Tune's legacy reporter: silent at verbose=0
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"  # no bar when a model is logged


def test_verbose_leaves_the_libraries_alone(tmp_path, library_loggers):
    before = {name: list(logging.getLogger(name).handlers) for name in LIBRARIES}
    assert route_library_logs(tmp_path, verbose=True) is None
    assert {name: list(logging.getLogger(name).handlers) for name in LIBRARIES} == before
    assert not (tmp_path / "libraries.log").exists()


def test_what_ray_logs_while_ray_init_empties_its_logger_still_reaches_the_file(tmp_path, capfd, library_loggers):
    path = route_library_logs(tmp_path, verbose=False)
    with routing_kept_through_ray_init():
        logging.getLogger("ray").handlers.clear()  # what ray.init(configure_logging=False) does first
        logging.getLogger("ray._private.authentication").warning("Token authentication is enabled")
    logging.getLogger("ray.tune").warning("after ray.init")
    assert capfd.readouterr().err == ""
    assert "Token authentication is enabled" in path.read_text() and "after ray.init" in path.read_text()
