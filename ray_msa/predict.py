"""`python -m ray_msa.predict --model MODEL --data SOURCE --out FILE [--split ...]`: apply a trained model.

MODEL is what a `python -m ray_msa.tune` study logged: its MLflow model URI (`models:/m-...`,
`runs:/RUN/model`) or the study's run id. SOURCE is anything the readers accept for the dataset the
model was trained on: a `label.csv` folder (with a feature table or `.csd` files), an MMSA or MulT
pickle, an MVSA folder. Text, input statistics and batches are prepared exactly as in training.

The CSV holds each sample's id and prediction: `score` (MOSI, MOSEI, SIMS); `p_<emotion>`, the
probability that each of IEMOCAP's emotions is present; or the `tag` and `p_<class>` of an image+text
post. When the split is labelled, the dataset's metrics are printed. A model whose modalities or
feature widths do not fit the data is refused in one line naming what differs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException

from ray_msa.data.dataset import SPLITS, MSADataset, Split
from ray_msa.data.sources import load_dataset
from ray_msa.errors import InputError, exit_on_input_error
from ray_msa.serving.stored import StoredModel
from ray_msa.tracking import default_tracking_uri

SPLIT_CHOICES = (*SPLITS, "all")


def resolve_model(model: str, tracking_uri: str) -> str:
    """The URI of the model `model` names (a study run id names the model that run logged)."""
    mlflow.set_tracking_uri(tracking_uri)
    try:
        if model.startswith("models:/") or model.removeprefix("runs:/").strip("/").count("/"):
            mlflow.artifacts.list_artifacts(artifact_uri=model)  # raises if the store does not hold it
            return model  # models:/m-..., or runs:/<run id>/<artifact path>
        # a study run id, or runs:/<run id> without a path: the model that run logged
        run_id = model.removeprefix("runs:/").strip("/")
        client = mlflow.MlflowClient()
        experiment = client.get_run(run_id).info.experiment_id
        found = [m for m in client.search_logged_models([experiment]) if m.source_run_id == run_id]
        if not found:
            raise InputError(
                model,
                "--model",
                "this run logged no model",
                "pass the study run id printed at the end of `tune`, or its models:/ URI",
            )
        uri = f"models:/{found[0].model_id}"
    except MlflowException as err:
        raise InputError(
            model,
            "--model",
            f"not found in {tracking_uri} ({str(err).splitlines()[0]})",
            "pass a model URI or study run id from this tracking store (see --tracking-uri)",
        ) from None
    return uri


def load_stored(model: str, tracking_uri: str) -> StoredModel:
    """The model behind `model` (a URI or study run id), read from its safetensors weights."""
    uri = resolve_model(model, tracking_uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except MlflowException as err:
            raise InputError(
                model, "--model", f"its files cannot be read ({str(err).splitlines()[0]})", "check the store"
            ) from None
        return StoredModel.from_directory(local / "artifacts" if (local / "artifacts").is_dir() else local)


def chosen_split(dataset: MSADataset, name: str, source: str) -> Split:
    """The split to predict (`all`: every sample, train, valid, test in order)."""
    part = Split.concat([s for s in dataset.splits.values() if len(s)]) if name == "all" else dataset.splits[name]
    if not len(part):
        raise InputError(source, "--split", f"no samples in the {name} split", "choose a split that has samples")
    return part


@exit_on_input_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ray_msa.predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="models:/m-..., runs:/RUN/model, or a study run id")
    parser.add_argument("--data", required=True, help="what the readers accept for the model's dataset")
    parser.add_argument("--out", required=True, help="CSV to write: id and the prediction's columns")
    parser.add_argument(
        "--split",
        choices=SPLIT_CHOICES,
        default="test",
        help="which samples (default test; MVSA: test_without_label.txt, train: train.txt)",
    )
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow store (default sqlite under ./mlruns)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per download
    stored = load_stored(args.model, args.tracking_uri or default_tracking_uri())
    dataset = stored.prepare(load_dataset(stored.record["dataset"], args.data), args.data)
    part = chosen_split(dataset, args.split, args.data)
    raw = stored.raw_predictions(part)
    table = pd.DataFrame({"id": part.ids, **stored.columns(raw)})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.9g")
    print(f"wrote {len(table)} predictions to {out}")
    metrics = stored.metrics(part, raw)
    if metrics:
        print(f"{args.split} metrics on {len(part)} labelled samples:")
        for name, value in metrics.items():
            print(f"{name:<10} {value:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
