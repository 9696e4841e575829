"""MLflow bookkeeping: study -> trial -> fold runs, found again by tags so a restarted
worker continues its run instead of creating a second one."""

from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

PARENT = "mlflow.parentRunId"
EXPERIMENT_KIND, MODEL_DEVELOPMENT = "mlflow.experimentKind", "custom_model_development"
SECRET_MARKERS = ("password", "secret", "token", "key", "credential")
CREDENTIALS = re.compile(r"(\b[a-zA-Z][\w+.-]*://[^/\s:@]+):[^@\s/]+@")


def default_tracking_uri() -> str:
    """SQLite at an absolute path under ./mlruns (Tune runs trials in other directories)."""
    root = Path("mlruns").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def artifact_root(tracking_uri: str) -> str | None:
    """Artifacts beside a local SQLite store; a server decides for itself."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
    return None


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def redact(text: str) -> str:
    """`scheme://user:password@host` -> `scheme://user:***@host` (tracking URIs, data URLs)."""
    return CREDENTIALS.sub(r"\1:***@", str(text))


def public_params(params: dict[str, Any]) -> dict[str, str]:
    """Parameters as MLflow strings, without anything that looks like a secret: keys that
    name one are dropped, passwords inside URLs are masked."""
    return {
        k: redact(str(v))[:6000]
        for k, v in params.items()
        if not any(marker in k.lower() for marker in SECRET_MARKERS) and not k.startswith("_")
    }


class Tracker:
    """Thin layer over MlflowClient with explicit run ids (safe across processes)."""

    def __init__(self, tracking_uri: str) -> None:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.uri = tracking_uri
        self.client = MlflowClient(tracking_uri)
        self.created: set[str] = set()  # runs this process created: nothing logged yet, no need to look
        self._logged: dict[tuple[str, str], set[int]] = {}

    def experiment(self, name: str) -> str:
        """The experiment's id, created if needed, tagged as model development so MLflow's UI
        opens it on its training runs (not the GenAI overview)."""
        found = self.client.get_experiment_by_name(name)
        if found is None:
            return self.client.create_experiment(
                name, artifact_location=artifact_root(self.uri), tags={EXPERIMENT_KIND: MODEL_DEVELOPMENT}
            )
        if found.tags.get(EXPERIMENT_KIND) != MODEL_DEVELOPMENT:
            self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND, MODEL_DEVELOPMENT)
        return found.experiment_id

    def dataset_input(self, run_id: str, name: str, digest: str, source: str, context: str = "training") -> None:
        """The data as an MLflow dataset input (the UI's Dataset column): its name, the content
        fingerprint as digest and where it was read from. Logged once per run."""
        from mlflow.data.dataset_source_registry import resolve_dataset_source  # only runs with data need it
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        if any(d.dataset.digest == digest for d in self.client.get_run(run_id).inputs.dataset_inputs):
            return
        with warnings.catch_warnings():  # "can be interpreted in multiple ways": local paths match two sources
            warnings.simplefilter("ignore", UserWarning)
            where = resolve_dataset_source(redact(source))
        dataset = MetaDataset(where, name=name, digest=digest)
        entry = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
        self._with_retry(self.client.log_inputs, run_id, datasets=[entry])

    def start(self, experiment_id: str, name: str, tags: dict[str, str], parent: str | None = None) -> str:
        all_tags = dict(tags, **({PARENT: parent} if parent else {}))
        run_id = self.client.create_run(experiment_id, run_name=name, tags=all_tags).info.run_id
        self.created.add(run_id)
        return run_id

    def child(self, parent: str, name: str, tags: dict[str, str]) -> str:
        """The child run of `parent` with these tags, created once (idempotent on restart)."""
        experiment_id = self.client.get_run(parent).info.experiment_id
        query = " and ".join([f"tags.`{PARENT}` = '{parent}'"] + [f"tags.`{k}` = '{v}'" for k, v in tags.items()])
        existing = self.client.search_runs([experiment_id], query, max_results=1)
        if existing:
            run_id = existing[0].info.run_id
            if existing[0].info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
            return run_id
        return self.start(experiment_id, name, tags, parent)

    def reopen(self, run_id: str) -> None:
        """Mark a run RUNNING again (a resumed study continues its own run)."""
        self.client.update_run(run_id, status="RUNNING")

    def params(self, run_id: str, params: dict[str, Any]) -> None:
        current = self.client.get_run(run_id).data.params
        fresh = [Param(k, v) for k, v in public_params(params).items() if k not in current]
        for start in range(0, len(fresh), 100):
            self.client.log_batch(run_id, params=fresh[start : start + 100])

    def metrics(self, run_id: str, values: dict[str, float], step: int = 0) -> None:
        """Log once per (metric, step): a run continued after a worker restart or a resumed
        study replays the epochs since its last checkpoint, and those are already logged."""
        now = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), now, step)
            for k, v in values.items()
            if v is not None and math.isfinite(float(v)) and not self._already_logged(run_id, k, step)
        ]
        for start in range(0, len(batch), 1000):
            self._with_retry(self.client.log_batch, run_id, metrics=batch[start : start + 1000])
        for metric in batch:
            self._logged.setdefault((run_id, metric.key), set()).add(step)

    def _already_logged(self, run_id: str, key: str, step: int) -> bool:
        if (run_id, key) not in self._logged:  # a run this process created has nothing logged before it
            created = run_id in self.created
            self._logged[(run_id, key)] = (
                set() if created else {m.step for m in self.client.get_metric_history(run_id, key)}
            )
        return step in self._logged[(run_id, key)]

    @staticmethod
    def _with_retry(call, *args, attempts: int = 8, **kwargs) -> None:
        """Concurrent trials share one store; SQLite answers 'database is locked' under load."""
        for attempt in range(attempts):
            try:
                return call(*args, **kwargs)
            except Exception as err:  # MlflowException wraps the driver's OperationalError
                if "locked" not in str(err).lower() or attempt == attempts - 1:
                    raise
                time.sleep(0.05 * 2**attempt)

    def predictions(self, run_id: str, ids: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> None:
        """`test_predictions.csv`: id, the label(s) and the prediction(s) (a score, or one logit per
        column) of every test sample, in the split's order."""
        labels, scores = np.asarray(labels).reshape(len(ids), -1), np.asarray(scores).reshape(len(ids), -1)

        def names(kind: str, width: int) -> list[str]:
            return [kind] if width == 1 else [f"{kind}_{i}" for i in range(width)]

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "test_predictions.csv"
            with path.open("w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["id", *names("label", labels.shape[1]), *names("prediction", scores.shape[1])])
                for i, sample in enumerate(ids):
                    writer.writerow([sample, *labels[i].tolist(), *scores[i].tolist()])  # repr: exact round trip
            self._with_retry(self.client.log_artifact, run_id, str(path))

    def tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def plot_history(self, run_id: str, history: list[dict[str, float]], prefixes: tuple[str, ...]) -> None:
        """One PNG artifact per prefix: every metric starting with it, over epochs."""
        import matplotlib  # heavy: only runs that plot load it

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        for prefix in prefixes:
            names = sorted({k for row in history for k in row if k.startswith(f"train_{prefix}")})
            if not names:
                continue
            fig, ax = plt.subplots(figsize=(5, 3.2))
            for name in names:
                ax.plot(
                    range(1, len(history) + 1),
                    [row.get(name, math.nan) for row in history],
                    marker="o",
                    label=name[len("train_") :],
                )
            ax.set_xlabel("epoch")
            ax.set_title(f"{prefix.rstrip('_')} per epoch")
            ax.legend()
            fig.tight_layout()
            self.client.log_figure(run_id, fig, f"{prefix.rstrip('_')}_over_epochs.png")
            plt.close(fig)

    def box_plot(self, run_id: str, name: str, series: dict[str, np.ndarray]) -> None:
        """A PNG artifact `name`: one box per series (e.g. each shared feature's attention weight over samples)."""
        import matplotlib  # heavy: only runs that plot load it

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(series), 3.2))
        ax.boxplot([np.asarray(v).ravel() for v in series.values()], tick_labels=list(series))
        ax.set_title(name.removesuffix(".png").replace("_", " "), fontsize=9)
        fig.tight_layout()
        self.client.log_figure(run_id, fig, name)
        plt.close(fig)

    def confusion_matrix(self, run_id: str, truth: np.ndarray, pred: np.ndarray, names: tuple[str, ...]) -> None:
        """The fold's best-epoch validation confusion matrix as a PNG artifact."""
        import matplotlib  # heavy: only classification runs plot one

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.metrics import ConfusionMatrixDisplay

        display = ConfusionMatrixDisplay.from_predictions(
            truth, pred, labels=list(range(len(names))), display_labels=list(names), colorbar=False
        )
        display.figure_.tight_layout()
        self.client.log_figure(run_id, display.figure_, "confusion_matrix.png")
        plt.close(display.figure_)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def children(self, parent: str) -> list:
        experiment_id = self.client.get_run(parent).info.experiment_id
        return self.client.search_runs([experiment_id], f"tags.`{PARENT}` = '{parent}'", max_results=10000)
