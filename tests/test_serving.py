"""A study's model applied anywhere: `predict` for every task and format, the MLflow pyfunc answered by
`mlflow models serve`, and the Ray Serve deployment, each giving the numbers and predictions of the study."""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import (
    MOSI_SAMPLE,
    MosiStudy,
    free_port,
    listening_addresses,
    new_store,
    study_env,
    study_runs,
    tune_command,
)
from mlflow.tracking import MlflowClient

from ray_msa.config import TextConfig
from ray_msa.data import load_dataset
from ray_msa.data.synthetic_files import write_mmsa_pickle, write_mult_pickle
from ray_msa.metrics import EMOTIONS, compute_metrics
from ray_msa.predict import main as predict
from ray_msa.search_space import load_space
from ray_msa.serving.stored import StoredModel, write_model_files
from ray_msa.study import model_record

METRIC_LINE = re.compile(r"^(\w+)\s+(-?\d+\.\d{4})$")


def printed_metrics(output: str) -> dict[str, str]:
    """The metric lines `predict` printed: name -> value as printed (4 decimals)."""
    return dict(m.groups() for line in output.splitlines() if (m := METRIC_LINE.match(line)))


def request_frame(split, rows: np.ndarray) -> pd.DataFrame:
    """The pyfunc's input for samples `rows`: id, transcript and the real audio and vision steps of each."""
    return pd.DataFrame(
        {
            "id": split.ids[rows],
            "text": split.raw_text[rows],
            "audio": [split.audio[i][: split.audio_lengths[i]].tolist() for i in rows],
            "vision": [split.vision[i][: split.vision_lengths[i]].tolist() for i in rows],
        }
    )


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def predicted_table(model: str, uri: str, out: Path, *extra: str) -> pd.DataFrame:
    assert (
        predict(["--model", model, "--data", str(MOSI_SAMPLE), "--out", str(out), "--tracking-uri", uri, *extra]) == 0
    )
    return pd.read_csv(out, dtype={"id": str})


@pytest.mark.slow
@pytest.mark.xdist_group("mosi_study")  # one worker runs the shared study once
def test_predict_gives_the_study_test_metrics(mosi_study: MosiStudy, tmp_path, capsys):
    """The study logs its first seed's model; predict on its data prints that seed's test metrics and writes
    the predictions the study kept, in any format the readers accept; data of other widths is refused."""
    assert mosi_study.done.returncode == 0, mosi_study.done.stdout[-3000:] + mosi_study.done.stderr[-3000:]
    uri = mosi_study.uri
    study, finals = study_runs(uri, "ray_msa-mosi")
    first = finals[0]
    capsys.readouterr()
    table = predicted_table(study.info.run_id, uri, tmp_path / "test.csv")
    printed = printed_metrics(capsys.readouterr().out)
    assert set(printed) == {"MAE", "Corr", "Acc7", "Acc5", "Has0_Acc2", "Has0_F1", "Non0_Acc2", "Non0_F1"}
    assert printed == {name: f"{first.data.metrics[f'test_{name}']:.4f}" for name in printed}
    test = load_dataset("mosi", MOSI_SAMPLE).splits["test"]
    kept = pd.read_csv(
        MlflowClient(uri).download_artifacts(first.info.run_id, "test_predictions.csv", str(tmp_path)),
        dtype={"id": str},
    )
    assert list(table["id"]) == list(test.ids) == list(kept["id"])
    assert np.abs(table["score"].to_numpy() - kept["prediction"].to_numpy()).max() < 1e-6  # both written as text
    recomputed = compute_metrics("mmsa", table["score"].to_numpy(), test.labels)
    assert recomputed == pytest.approx({k[5:]: v for k, v in first.data.metrics.items() if k.startswith("test_")})
    # every sample of every split, once
    everything = predicted_table(study.info.run_id, uri, tmp_path / "all.csv", "--split", "all")
    dataset = load_dataset("mosi", MOSI_SAMPLE)
    assert list(everything["id"]) == [i for s in ("train", "valid", "test") for i in dataset.splits[s].ids]
    assert everything["score"].notna().all()
    # the pyfunc, loaded in this process, predicts the same
    mlflow.set_tracking_uri(uri)
    (logged,) = MlflowClient(uri).search_logged_models([study.info.experiment_id])
    served = mlflow.pyfunc.load_model(logged.model_uri).predict(request_frame(test, np.arange(len(test))))
    assert np.abs(served["score"].to_numpy() - table["score"].to_numpy()).max() < 1e-6
    # an MMSA pickle (synthetic content) with the widths the model reads: every id gets a score
    shapes = {"text": (50, 768), "audio": (4, 73), "vision": (6, 100)}
    pickle_dir = write_mmsa_pickle(tmp_path / "fits", "mosi", "unaligned", (12, 4, 8), shapes=shapes).parent
    out = tmp_path / "pickle.csv"
    args = ["--model", study.info.run_id, "--data", str(pickle_dir), "--out", str(out), "--tracking-uri", uri]
    assert predict([*args, "--split", "all"]) == 0
    from_pickle = pd.read_csv(out, dtype={"id": str})
    assert len(from_pickle) == 24 and from_pickle["id"].is_unique and from_pickle["score"].notna().all()
    # the public MOSI widths (5 audio, 20 vision features) are not the model's: refused in one line
    public = write_mmsa_pickle(tmp_path / "public", "mosi", "unaligned", (12, 4, 8), shapes=shapes | {"audio": (4, 5)})
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        predict(
            [
                "--model",
                study.info.run_id,
                "--data",
                str(public),
                "--out",
                str(tmp_path / "no.csv"),
                "--tracking-uri",
                uri,
            ]
        )
    err = capsys.readouterr().err.strip()
    assert refused.value.code == 2 and len(err.splitlines()) == 1
    assert "audio width" in err and "reads 73 audio features per step, this data has 5" in err
    assert not (tmp_path / "no.csv").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_predict_gives_an_iemocap_study_its_emotion_metrics(tmp_path, capsys):
    """A MulT study on a synthetic IEMOCAP MulT pickle (text as GloVe-like features): predict's emotion
    probabilities give the study's test metrics, and the printed ones are the study's."""
    shapes = {"text": (8, 300), "audio": (8, 74), "vision": (8, 35)}
    data = write_mult_pickle(tmp_path / "iemocap", "iemocap", "aligned", (48, 12, 24), shapes=shapes)
    args = ("--arch", "mult", "--trials", "1", "--folds", "2", "--epochs", "1", "--test-seeds", "1")
    done = tune_command("iemocap", "--data", str(data), *args, "--cpus-per-worker", "0.5", cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    study, (final,) = study_runs(uri, "ray_msa-iemocap")
    out = tmp_path / "emotions.csv"
    capsys.readouterr()
    assert predict(["--model", study.info.run_id, "--data", str(data), "--out", str(out), "--tracking-uri", uri]) == 0
    printed = printed_metrics(capsys.readouterr().out)
    assert len(printed) == 10 and printed == {name: f"{study.data.metrics[f'test_{name}']:.4f}" for name in printed}
    table = pd.read_csv(out, dtype={"id": str})
    test = load_dataset("iemocap", data).splits["test"]
    assert list(table["id"]) == list(test.ids) and list(table.columns) == ["id", *(f"p_{e}" for e in EMOTIONS)]
    p = table[[f"p_{e}" for e in EMOTIONS]].to_numpy()
    assert ((p > 0) & (p < 1)).all()
    logits = np.log(np.stack([1 - p, p], -1)).reshape(len(p), -1)  # the same argmax as the model's logits
    recomputed = compute_metrics("emotions", logits, test.labels)
    assert recomputed == pytest.approx({k[5:]: v for k, v in final.data.metrics.items() if k.startswith("test_")})


@pytest.mark.slow
@pytest.mark.xdist_group("mosi_study")
def test_mlflow_models_serve_answers_as_predict(mosi_study: MosiStudy, tmp_path):
    """`mlflow models serve` of the study's model answers a real HTTP request on 127.0.0.1 with predict's
    predictions."""
    uri = mosi_study.uri
    study, _ = study_runs(uri, "ray_msa-mosi")
    expected = predicted_table(study.info.run_id, uri, tmp_path / "test.csv")
    (logged,) = MlflowClient(uri).search_logged_models([study.info.experiment_id])
    test = load_dataset("mosi", MOSI_SAMPLE).splits["test"]
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", logged.model_uri, "--env-manager", "local"]
    env = {**study_env(tmp_path), "MLFLOW_TRACKING_URI": uri}
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its uvicorn workers stop with it
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", server, tmp_path / "serve.log")
        status, answer = post(
            f"http://127.0.0.1:{port}/invocations",
            {"dataframe_split": request_frame(test, np.arange(len(test))).to_dict(orient="split")},
        )
        assert status == 200, answer
        scores = np.array([row["score"] for row in answer["predictions"]])
        assert np.abs(scores - expected["score"].to_numpy()).max() < 1e-6
        assert listening_addresses(port) == {"127.0.0.1"}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def wait_for(url: str, process: subprocess.Popen, log: Path, seconds: float = 180) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the server stopped: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"no answer from {url} in {seconds:.0f}s: {log.read_text()[-3000:]}")


@pytest.mark.slow
@pytest.mark.xdist_group("mosi_study")
def test_ray_serve_answers_200_concurrent_requests_as_predict(mosi_study: MosiStudy, tmp_path):
    """`python -m ray_msa.serve --replicas 2` on the run's cluster: 200 concurrent requests (32 at a time, on
    loopback), in both of the pyfunc's JSON layouts, every one answered with predict's predictions."""
    import ray
    from ray import serve

    uri = mosi_study.uri
    study, _ = study_runs(uri, "ray_msa-mosi")
    expected = predicted_table(study.info.run_id, uri, tmp_path / "test.csv")["score"].to_numpy()
    test = load_dataset("mosi", MOSI_SAMPLE).splits["test"]
    port = free_port()
    log = tmp_path / "serve.log"
    command = [sys.executable, "-u", "-m", "ray_msa.serve", "--model", study.info.run_id, "--tracking-uri", uri]
    command += ["--replicas", "2", "--cpus-per-replica", "0.5", "--port", str(port)]
    with log.open("w") as out:
        server = subprocess.Popen(command, env=study_env(tmp_path), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while "serving " not in log.read_text() and server.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert "serving " in log.read_text(), log.read_text()[-3000:]
        url = f"http://127.0.0.1:{port}/invocations"
        rng = np.random.default_rng(0)
        requests = [rng.choice(len(test), size=1 + k % 3, replace=False) for k in range(200)]

        def ask(k: int) -> tuple[int, dict]:
            frame = request_frame(test, requests[k])
            body = (
                {"dataframe_records": frame.to_dict(orient="records")}
                if k % 2
                else {"dataframe_split": frame.to_dict(orient="split")}
            )
            return post(url, body)

        with ThreadPoolExecutor(max_workers=32) as pool:
            answers = list(pool.map(ask, range(200)))
        assert [status for status, _ in answers] == [200] * 200
        for rows, (_, answer) in zip(requests, answers):
            scores = np.array([row["score"] for row in answer["predictions"]])
            assert len(scores) == len(rows) and np.abs(scores - expected[rows]).max() < 1e-5
        assert listening_addresses(port) == {"127.0.0.1"}
        ray.init(address=os.environ["RAY_ADDRESS"], logging_level="ERROR")
        try:
            (deployment,) = serve.status().applications["ray_msa"].deployments.values()
            assert deployment.replica_states == {"RUNNING": 2}
        finally:
            ray.shutdown()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=90)
    assert server.returncode == 0, log.read_text()[-3000:]


def small_model_files(tmp_path: Path) -> tuple[Path, torch.nn.Module, object]:
    """An untrained mtl on the MOSI slice (frozen text), its files written as a study writes them."""
    space = load_space("mtl")
    trial = space.build(space.start_for(), {"metric": "MAE"}, TextConfig())
    dataset = trial.spec.prepare_text(load_dataset("mosi", MOSI_SAMPLE), trial.text)
    torch.manual_seed(0)
    network = trial.spec.for_dataset(dataset, trial.model, trial.text).eval()
    network.set_input_stats({m: (torch.randn(d), torch.rand(d) + 0.5) for m, d in (("audio", 73), ("vision", 100))})
    write_model_files(tmp_path / "model", network, model_record(dataset, trial) | {"members": 0})
    return tmp_path / "model", network, dataset


def test_stored_weights_load_without_unpickling(tmp_path, monkeypatch):
    """The weights are a safetensors file: the model loads with every unpickler disabled, and predicts what the
    network it was written from predicts (its input statistics included)."""
    folder, network, dataset = small_model_files(tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError("a stored model must load without unpickling")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    stored = StoredModel.from_directory(folder)
    test = dataset.splits["test"]
    from ray_msa.train.batches import batches, in_order

    (batch,) = batches(test, in_order(np.arange(len(test)), len(test)))
    with torch.inference_mode():
        direct = network(batch).prediction.numpy()
    assert np.abs(stored.raw_predictions(test) - direct).max() < 1e-6
    assert not np.allclose(stored.network.audio_mean.numpy(), 0)  # the statistics came with the weights


def test_a_pickled_model_is_refused_in_one_line(tmp_path, capsys):
    """A model logged as a pickled PyTorch module (before weights-only files) is not loaded: the user is told to
    log it again."""
    import mlflow.pytorch

    folder, network, _ = small_model_files(tmp_path)
    uri = new_store(tmp_path / "mlflow.db")
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as run:
        mlflow.pytorch.log_model(network, name="model", serialization_format="pickle", pip_requirements=["torch"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        predict(
            [
                "--model",
                run.info.run_id,
                "--data",
                str(MOSI_SAMPLE),
                "--out",
                str(tmp_path / "p.csv"),
                "--tracking-uri",
                uri,
            ]
        )
    err = capsys.readouterr().err.strip()
    assert refused.value.code == 2 and len(err.splitlines()) == 1 and "pickled PyTorch model" in err
    assert "ray_msa.retest" in err and not (tmp_path / "p.csv").exists()
