"""`python -m ray_msa.predict --model MODEL --data DIR --out FILE`: tag image+text posts.

MODEL is what a `python -m ray_msa.tune mvsa` study logged: its MLflow model URI
(`models:/m-...`, `runs:/RUN/model`) or the study's run id. DIR is a folder in the MVSA
layout (`data/<guid>.jpg|txt`, `train.txt`, `test_without_label.txt`); the posts are read,
cleaned and encoded exactly as in training. `--split test` (default) tags every guid of
`test_without_label.txt`; `--split train` tags the labelled posts and prints accuracy.
A model trained for another task (a MOSI score, IEMOCAP emotions) is refused.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

import mlflow
import mlflow.pytorch
import numpy as np
import torch
from mlflow.exceptions import MlflowException

from ray_msa.config import TextConfig
from ray_msa.data.sources import load_dataset
from ray_msa.errors import InputError, exit_on_input_error
from ray_msa.models import get_spec
from ray_msa.tracking import default_tracking_uri
from ray_msa.train.batches import batches, in_order
from ray_msa.trial import TrialConfig


def resolve_model(model: str, tracking_uri: str) -> tuple[str, dict]:
    """(model URI, model_spec.json of the run that logged it)."""
    mlflow.set_tracking_uri(tracking_uri)
    try:
        if model.startswith("models:/m-"):
            run_id = mlflow.get_logged_model(model.split("/")[-1]).source_run_id
            uri = model
        elif model.startswith("runs:/") and model.removeprefix("runs:/").strip("/").count("/"):
            run_id, uri = model.removeprefix("runs:/").split("/")[0], model  # runs:/<run id>/<artifact path>
        else:  # a study run id, or runs:/<run id> without a path: the model that run logged
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
        spec = mlflow.artifacts.load_dict(f"runs:/{run_id}/model_spec.json")
    except MlflowException as err:
        raise InputError(
            model,
            "--model",
            f"not found in {tracking_uri} ({str(err).splitlines()[0]})",
            "pass a model URI or study run id from this tracking store (see --tracking-uri)",
        ) from None
    return uri, spec


def stored_text(spec: dict) -> TextConfig:
    """The text input the model was trained with, from its resolved configuration (older
    records kept only the text model's name)."""
    if "config" in spec:
        return TrialConfig.from_dict(spec["config"]).text
    return TextConfig(model=spec.get("model_config", {}).get("text_model", "minilm"))


def check_spec(model: str, spec: dict) -> None:
    task = spec.get("task", "classes" if spec.get("dataset") == "mvsa" else "score")
    if task != "classes":
        raise InputError(
            model,
            "task",
            f"trained on {spec.get('dataset', '?')} to predict {'a sentiment score' if task == 'score' else task}, "
            "not the positive/neutral/negative class of an image+text post",
            "pass a model from a `python -m ray_msa.tune mvsa` study",
        )


def predict_posts(model, dataset, split: str, batch_size: int = 64) -> np.ndarray:
    """Class ids for every post of `split`, in file order."""
    part = dataset.splits[split]
    model.eval()
    with torch.inference_mode():
        logits = [
            model(batch).prediction.float().numpy()
            for batch in batches(part, in_order(np.arange(len(part)), batch_size), model.inputs())
        ]
    return np.concatenate(logits).argmax(-1)


@exit_on_input_error
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ray_msa.predict", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="models:/m-..., runs:/RUN/model, or a study run id")
    parser.add_argument("--data", required=True, help="folder in the MVSA layout")
    parser.add_argument("--out", required=True, help="CSV to write: guid,tag")
    parser.add_argument(
        "--split", choices=("test", "train"), default="test", help="test_without_label.txt (default) or train.txt"
    )
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow store (default sqlite under ./mlruns)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    uri, spec = resolve_model(args.model, args.tracking_uri or default_tracking_uri())
    check_spec(args.model, spec)
    dataset = load_dataset("mvsa", args.data)
    dataset = get_spec(spec["arch"]).prepare_text(dataset, stored_text(spec))
    model = mlflow.pytorch.load_model(uri, map_location="cpu")
    part = dataset.splits[args.split]
    if not len(part):
        listed = "train.txt" if args.split == "train" else "test_without_label.txt"
        raise InputError(
            Path(args.data) / listed,
            "--split",
            f"no posts to tag ({listed} is absent or empty)",
            f"add {listed} or choose the other --split",
        )
    tags = predict_posts(model, dataset, args.split)
    names = spec.get("class_names") or list(dataset.class_names)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["guid", "tag"])
        writer.writerows(zip(part.ids.tolist(), [names[t] for t in tags]))
    print(f"wrote {len(tags)} predictions to {out}")
    if args.split == "train":
        print(f"accuracy on {len(tags)} labelled posts: {np.mean(tags == part.labels):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
