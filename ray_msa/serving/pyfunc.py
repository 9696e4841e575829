"""The final model as an MLflow pyfunc: `mlflow.pyfunc.load_model(uri).predict(frame)` and
`mlflow models serve -m URI` answer with the same rows as `python -m ray_msa.predict`.

It is logged as MLflow's "models from code": the model is `pyfunc_code.py` (stored with it, run at
load) and its two artifacts, `model_spec.json` and `weights.safetensors`, so nothing pickled is loaded.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, DataType, Schema

from ray_msa.metrics import EMOTIONS
from ray_msa.serving.stored import SPEC, WEIGHTS, StoredModel

CODE = Path(__file__).with_name("pyfunc_code.py")
STEPS = Array(Array(DataType.double))  # one row's sequence: steps x features (a vector is one step)


class MSAPyfunc(mlflow.pyfunc.PythonModel):
    """Rows of transcripts and feature sequences (or posts' text and image bytes) in, predictions out."""

    def load_context(self, context: Any) -> None:
        self.model = StoredModel.from_files(Path(context.artifacts["model_spec"]), Path(context.artifacts["weights"]))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return self.model.predict_frame(model_input)


def signature(record: dict[str, Any]) -> ModelSignature:
    """Inputs: an optional `id`, then per modality the transcript (`text`; feature sequences where the model
    reads text features) and the `audio` and `vision` sequences, or a post's `text` and `image` (JPEG bytes).
    Outputs: `score`; `p_<emotion>`; or `tag` and `p_<class>`."""
    inputs = [ColSpec(DataType.string, "id", required=False)]
    if record["task"] == "classes":
        inputs += [ColSpec(DataType.string, "text"), ColSpec(DataType.binary, "image")]
    else:
        text_features = record["config"]["text"]["mode"] == "features"
        for m in record["modalities"]:
            inputs.append(ColSpec(STEPS if m != "text" or text_features else DataType.string, m))
    if record["task"] == "score":
        outputs = [ColSpec(DataType.double, "score")]
    elif record["task"] == "emotions":
        outputs = [ColSpec(DataType.double, f"p_{e}") for e in EMOTIONS]
    else:
        classes = [ColSpec(DataType.double, f"p_{c}") for c in record["class_names"]]
        outputs = [ColSpec(DataType.string, "tag"), *classes]
    return ModelSignature(Schema(inputs), Schema(outputs))


def log_pyfunc(directory: Path, record: dict[str, Any]) -> str:
    """Log the model whose files are in `directory` to the active run as `model`: its URI."""
    with warnings.catch_warnings():  # the signature is given: MLflow's advice to add an input example is noise
        warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(CODE),
            artifacts={"model_spec": str(directory / SPEC), "weights": str(directory / WEIGHTS)},
            signature=signature(record),
            pip_requirements=["torch", "safetensors", "ray_msa"],
        )
    return info.model_uri
