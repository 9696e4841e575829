"""Scale out and survive: cluster files against Ray's schema, DeepSpeed configs, resource
planning, a study on a simulated multi-node cluster, a training worker killed mid-fold,
an interrupted and resumed study, concurrent writers, and what binds where."""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import RAY, SyntheticStudies, free_port, listening_addresses, new_store, trials_in
from metric_writer import log_many
from mlflow.tracking import MlflowClient

from ray_msa.errors import InputError
from ray_msa.study import choose_devices, plan_resources
from ray_msa.tracking import Tracker
from ray_msa.train.engine import deepspeed_config

ROOT = Path(__file__).resolve().parents[1]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment (with the test run's RAY_ADDRESS) less the tracking URI MLflow exports."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, **extra}


# ---- cluster files ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cluster.yaml", "cluster.local.yaml"])
def test_cluster_files_pass_rays_schema_and_validate_config(name):
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((ROOT / name).read_text())
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(raw, schema)
    prepared = prepare_config(copy.deepcopy(raw))
    validate_config(prepared)
    commands = " ".join(raw["setup_commands"])
    assert "pip install" in commands and "ray_msa" in commands  # every node installs the project
    head_start = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "RAY_AUTH_MODE=token" in head_start
    assert "ray_msa.mlflow_server" in head_start and "0.0.0.0" not in head_start
    assert any("ray_msa" in remote for remote in raw["file_mounts"])


def test_aws_cluster_autoscales_gpu_workers_from_zero():
    from ray.autoscaler._private.util import prepare_config

    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    assert raw["provider"]["type"] == "aws"
    types = prepare_config(copy.deepcopy(raw))["available_node_types"]
    head, worker = types[raw["head_node_type"]], types["gpu_worker"]
    assert head["resources"].get("GPU", 0) == 0  # no training worker lands on the head
    assert worker["min_workers"] == 0 and worker["max_workers"] >= 2
    assert worker["node_config"]["InstanceType"].startswith(("g4dn.", "g5.", "g6.", "p3.", "p4d.", "p5."))
    assert any(remote.endswith("data") for remote in raw["file_mounts"])  # data at the same path on every node


# ---- DeepSpeed configuration and resource planning ----------------------------------------


def test_deepspeed_config_fills_the_repo_template(monkeypatch, tmp_path):
    cpu = deepspeed_config(batch_size=32, world=4, grad_clip=0.5, zero_stage=1, device=torch.device("cpu"))
    assert cpu["train_micro_batch_size_per_gpu"] == 8 and cpu["train_batch_size"] == 32
    assert cpu["gradient_clipping"] == 0.5 and cpu["zero_optimization"]["stage"] == 1
    assert "bf16" not in cpu and "fp16" not in cpu  # fp32 on CPU
    assert "auto" not in json.dumps(cpu)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert deepspeed_config(32, 1, 1.0, 0, torch.device("cuda", 0))["bf16"] == {"enabled": True}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    v100 = deepspeed_config(32, 1, 1.0, 0, torch.device("cuda", 0))
    assert v100["fp16"]["enabled"] is True and v100["fp16"]["loss_scale"] == 0 and "bf16" not in v100
    mine = tmp_path / "ds.json"
    mine.write_text(
        json.dumps(
            {"train_micro_batch_size_per_gpu": "auto", "gradient_clipping": 5.0, "zero_optimization": {"stage": 2}}
        )
    )
    user = deepspeed_config(32, 2, 1.0, 0, torch.device("cpu"), mine)
    assert (
        user["gradient_clipping"] == 5.0
        and user["zero_optimization"]["stage"] == 2
        and user["train_micro_batch_size_per_gpu"] == 16
    )
    broken = tmp_path / "broken.json"
    broken.write_text("{stage: 2")
    with pytest.raises(InputError) as err:
        deepspeed_config(32, 1, 1.0, 0, torch.device("cpu"), broken)
    assert "broken.json" in str(err.value) and "deepspeed config" in str(err.value)


def test_engine_is_deepspeed_on_gpus_and_ddp_on_cpus():
    assert choose_devices(8, None, None) == (True, "deepspeed")  # a GPU cluster
    assert choose_devices(0, None, None) == (False, "ddp")  # CPUs only
    assert choose_devices(0, True, None) == (True, "deepspeed")  # autoscaling: GPU nodes not up yet
    assert choose_devices(8, False, None) == (False, "ddp")  # --cpu
    assert choose_devices(8, None, "ddp") == (True, "ddp")  # --engine wins


def test_resources_fill_the_cluster():
    assert plan_resources(2, 1, None) == (1.5, 2, 1)  # this laptop: one trial, 1.5 CPUs
    assert plan_resources(16, 1, 1.0)[2] == 10  # 16 CPUs, 1-CPU workers: 10 trials side by side
    per_worker, threads, concurrent = plan_resources(36, 1, None, gpus=8)  # 8 GPU nodes of 4 CPUs + a head
    assert concurrent == 8 and per_worker <= 36 / 8 and threads >= 1  # one trial per GPU
    assert plan_resources(36, 2, 1.0, gpus=8)[2] == 4  # two GPU workers per trial


# ---- MLflow server bindings and concurrent writers ----------------------------------------


@pytest.mark.slow
def test_mlflow_server_binds_loopback_by_default(tmp_path):
    import urllib.request

    port = free_port()
    log = tmp_path / "server.log"  # a file, not a pipe: unread, a pipe stalled the server's workers
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "ray_msa.mlflow_server", "--port", str(port), "--root", str(tmp_path / "mlflow")],
            env=clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            process_group=0,  # its own group, to stop it with its workers (a new session left them hanging)
        )
    try:
        deadline = time.time() + 240  # its start-up took over 90 s on 2 loaded cores
        while time.time() < deadline and server.poll() is None:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail(f"MLflow server did not answer: {log.read_text()[-2000:]}")
        assert listening_addresses(port) == {"127.0.0.1"}
        tracker = Tracker(f"http://127.0.0.1:{port}")
        run = tracker.start(tracker.experiment("bind-check"), "r", {})
        tracker.metrics(run, {"x": 1.0})
        assert MlflowClient(f"http://127.0.0.1:{port}").get_run(run).data.metrics["x"] == 1.0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_concurrent_writers_lose_no_metric(tmp_path):
    """Several trials log to one SQLite store at once (the local default)."""
    uri = new_store(tmp_path / "mlflow.db")
    tracker = Tracker(uri)
    experiment = tracker.experiment("concurrent")
    runs = [tracker.start(experiment, f"trial-{i}", {}) for i in range(4)]
    context = multiprocessing.get_context("spawn")
    writers = [
        context.Process(target=log_many, args=(uri, runs[i % 2], i, 60)) for i in range(4)
    ]  # two writers per run
    for w in writers:
        w.start()
    for w in writers:
        w.join(120)
        assert w.exitcode == 0
    client = MlflowClient(uri)
    for i in range(4):
        for key in (f"w{i}_a", f"w{i}_b"):
            assert sorted(m.step for m in client.get_metric_history(runs[i % 2], key)) == list(range(60))


def test_a_continued_run_logs_each_step_once(tmp_path):
    uri = new_store(tmp_path / "mlflow.db")
    first = Tracker(uri)
    parent = first.start(first.experiment("e"), "trial", {})
    fold = first.child(parent, "fold-0", {"role": "fold", "fold": "0"})
    for step in range(3):
        first.metrics(fold, {"val_MAE": 1.0 / (step + 1)}, step=step)
    restarted = Tracker(uri)  # a new worker process after a crash replays epochs 1 and 2
    assert restarted.child(parent, "fold-0", {"role": "fold", "fold": "0"}) == fold
    for step in range(1, 5):
        restarted.metrics(fold, {"val_MAE": 1.0 / (step + 1)}, step=step)
    assert [m.step for m in MlflowClient(uri).get_metric_history(fold, "val_MAE")] == [0, 1, 2, 3, 4]


def test_no_secret_reaches_parameters():
    from ray_msa.tracking import public_params, redact

    params = public_params(
        {
            "tracking_uri": "http://ana:hunter2@mlflow.lab:5000",
            "aws_secret_access_key": "AKIA",
            "RAY_AUTH_TOKEN": "t0k",
            "lr": 0.1,
        }
    )
    assert params == {"tracking_uri": "http://ana:***@mlflow.lab:5000", "lr": "0.1"}
    assert redact("postgresql://u:pw@db/mlflow") == "postgresql://u:***@db/mlflow"


# ---- multi-node, killed worker, interrupted study (Ray) ----------------------------------


def _study_settings(tmp_path: Path, train: dict | None = None, **overrides):
    import dataclasses

    from ray_msa.search_space import load_space
    from ray_msa.study import StudySettings

    space = load_space("lf_dnn")
    space = dataclasses.replace(space, train={**space.train, "max_epochs": 1, "batch_size": 64, **(train or {})})
    base = dict(
        dataset="mosi",
        space=space,
        trials=1,
        workers=1,
        flags={"folds": 2, "seed": 0, "metric": "MAE"},
        tracking_uri=new_store(tmp_path / "mlflow.db"),
        storage=str(tmp_path / "ray_results"),
    )
    return StudySettings(**{**base, **overrides})


# a few dozen synthetic samples with MOSI's labels: these tests are about orchestration, not learning
TINY_MOSI = {"sizes": (48, 16, 16), "name": "mosi", "seed": 5}


@pytest.fixture
def tiny_mosi():
    from ray_msa.data.synthetic import make_synthetic

    return make_synthetic(**TINY_MOSI)


def runs_of(uri: str, role: str, experiment: str = "ray_msa-mosi") -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment)
    return client.search_runs([experiment.experiment_id], f"tags.role = '{role}'", max_results=1000)


@pytest.mark.slow
def test_study_on_a_simulated_three_node_cluster_spreads_a_trials_workers(tmp_path, tiny_mosi, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    from ray_msa.study import run_study

    # every process of this cluster is told its address, and it has a Ray directory of its own: with the run's
    # other clusters on the machine (each xdist worker's), what looks for "the" local cluster must find this one
    port = free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"{ray.util.get_node_ip_address()}:{port}")
    temp_dir = tempfile.mkdtemp(prefix="ray_", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    head = {"num_cpus": 1, "gcs_server_port": port, "temp_dir": temp_dir}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    assert cluster.address == os.environ["RAY_ADDRESS"]
    for _ in range(2):
        cluster.add_node(num_cpus=1)  # each holds one 1-CPU worker: a 2-worker trial must span two nodes
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address)
        settings = _study_settings(tmp_path, workers=2, cpus_per_worker=1.0, test_seeds=1)
        result = run_study(tiny_mosi, settings)
        assert result.trials == 1 and "MAE" in result.test
        workers = list_actors(filters=[("class_name", "=", "RayTrainWorker")], detail=True, limit=1000)
        by_pid_node = {(a.pid, a.node_id) for a in workers}
        assert len({node for _, node in by_pid_node}) >= 2, by_pid_node  # one trial's workers on different nodes
        assert len(ray.nodes()) == 3
        study = runs_of(settings.tracking_uri, "study")
        assert len(study) == 1 and study[0].info.status == "FINISHED"
        assert len(runs_of(settings.tracking_uri, "trial")) == 1 and len(runs_of(settings.tracking_uri, "fold")) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def trial_reports(storage: str) -> list[str]:
    """The JSON lines Tune kept of the only trial of the only study in `storage`."""
    (record,) = (Path(storage) / "ray_msa_studies").glob("*.json")
    (results,) = (Path(storage) / record.stem).glob("*/result.json")
    return results.read_text().splitlines()


@pytest.mark.slow
def test_a_worker_killed_mid_fold_restarts_from_its_checkpoint(tmp_path, tiny_mosi, ray_cluster):
    """SIGKILL the process that trains the trial (one CPU worker: the Tune trial's own) after its second epoch (of
    ten): Tune starts the trial again, which says it resumed after the last epoch the killed process reported
    (every epoch is checkpointed),
    reports from the next epoch on, and reports exactly what an unkilled run of the same seed reports;
    MLflow holds one run per fold with every epoch's metrics once, equal to the unkilled run's. The unkilled run
    comes after, in the same Ray job (nothing pauses once one worker has), and is a Ray Train run (`engine="ddp"`
    named): a trial that trains in its own process reports what Ray Train's does."""
    import ray

    from ray_msa.study import run_study

    epochs = 10
    train = dict(max_epochs=epochs, patience=epochs, checkpoint_every=1)
    killed_dir, straight_dir = tmp_path / "killed", tmp_path / "straight"
    settings = _study_settings(killed_dir, train=train, max_failures=2, test_seeds=1, cpus_per_worker=0.5)
    straight_settings = _study_settings(straight_dir, train=train, test_seeds=1, cpus_per_worker=0.5, engine="ddp")
    killed: list[int] = []
    paused = tmp_path / "paused"  # the pid of the worker that paused; created once, by one worker only

    def pause_after_second_epoch() -> None:
        # runs in every process of this test's Ray job: the trial's training process, once its
        # second epoch is reported, waits to be killed. A kill timed from outside raced the ten half-second epochs
        import ray.tune

        report = ray.tune.report

        def report_then_pause(metrics: dict, *args, **kwargs) -> None:
            report(metrics, *args, **kwargs)
            if metrics.get("epoch") != 2 or "worker_started_at" not in metrics:
                return  # not the second epoch of a trial's cross-validation
            try:
                with open(paused, "x") as mark:  # the restarted worker and the final training do not pause
                    mark.write(str(os.getpid()))
            except FileExistsError:
                return
            time.sleep(600)

        ray.tune.report = report_then_pause

    ray.init(logging_level="WARNING", runtime_env={"worker_process_setup_hook": pause_after_second_epoch})

    def kill_after_second_epoch() -> None:
        # Tune writes a report to result.json once it has registered the report's checkpoint: the kill waits for
        # that, or the restart would rightly start from scratch
        deadline = time.time() + 600
        while time.time() < deadline:
            time.sleep(0.1)
            results = list(Path(settings.storage).glob("*/*/result.json"))
            reported = len(results[0].read_text().splitlines()) if results else 0
            if paused.exists() and paused.read_text() and reported == 2:
                pid = int(paused.read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return

    try:
        watcher = threading.Thread(target=kill_after_second_epoch, daemon=True)
        watcher.start()
        result = run_study(tiny_mosi, settings)
        watcher.join(5)
        assert paused.exists()  # from now on no process of this job pauses: the reference runs unkilled
        straight = run_study(tiny_mosi, straight_settings)
    finally:
        ray.shutdown()
    assert killed, "the trial did not pause after its second epoch"
    assert result.test == straight.test  # the same final model

    # Tune's record of the trial's reports, by worker attempt (each worker notes when it started)
    attempts: dict[float, list[dict]] = {}
    for line in trial_reports(settings.storage):
        report = json.loads(line)
        attempts.setdefault(report["worker_started_at"], []).append(report)
    first, second = (attempts[k] for k in sorted(attempts))
    assert len(attempts) == 2 and [r["epoch"] for r in first] == list(range(1, len(first) + 1))
    resumed_after = first[-1]["epoch"]  # the killed worker's last report, and its checkpoint
    assert resumed_after == 2
    assert [r["epoch"] for r in second] == list(range(resumed_after + 1, epochs + 1))  # not from epoch 1 again
    (trial,) = runs_of(settings.tracking_uri, "trial")
    assert trial.data.tags["resumed_from_epoch"] == str(resumed_after)
    unkilled = {json.loads(line)["epoch"]: json.loads(line) for line in trial_reports(straight_settings.storage)}
    compared = ("mean_MAE", "std_MAE", "mean_Corr", "folds_MAE", "folds_Acc7", "best_epochs", "folds_done")
    for report in first + second:  # every value the restarted trial reported, as if it had never died
        assert {k: report[k] for k in compared} == {k: unkilled[report["epoch"]][k] for k in compared}

    client, straight_client = MlflowClient(settings.tracking_uri), MlflowClient(straight_settings.tracking_uri)
    folds = sorted(runs_of(settings.tracking_uri, "fold"), key=lambda r: r.info.run_name)
    straight_folds = sorted(runs_of(straight_settings.tracking_uri, "fold"), key=lambda r: r.info.run_name)
    assert len(folds) == 2 and all(f.info.status == "FINISHED" for f in folds)
    for fold, reference in zip(folds, straight_folds):
        assert fold.data.tags.get("resumed_from_epoch") in (None, str(resumed_after))
        for key in ("val_MAE", "train_loss"):
            history = [(m.step, m.value) for m in client.get_metric_history(fold.info.run_id, key)]
            reference_history = straight_client.get_metric_history(reference.info.run_id, key)
            assert sorted(history) == sorted((m.step, m.value) for m in reference_history), key
            assert [step for step, _ in sorted(history)] == list(range(epochs)), key
    assert [m.step for m in client.get_metric_history(trial.info.run_id, "mean_MAE")] == list(range(epochs))


def cv_lines(output: str) -> list[str]:
    """The final table's metric rows without their test column, and the best configuration."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("metric "))
    rows = [line for line in lines[start:] if line.startswith(("MAE", "Corr", "Acc", "Has0", "Non0", "F1"))]
    best = [line for line in lines[start:] if line.startswith("best configuration")]
    return [row.rsplit(maxsplit=1)[0] for row in rows] + best


@pytest.mark.slow
@pytest.mark.xdist_group("synthetic_studies")  # one worker builds the shared studies once
def test_an_interrupted_study_resumes_to_the_same_table(synthetic_studies: SyntheticStudies):
    """SIGTERM once the second of three trials has checkpointed an epoch (every epoch is; no trial stopped
    early): the study run is KILLED while stopped; --resume continues the unfinished trial after
    its checkpointed epoch, not from epoch 1, runs no finished trial again, ends FINISHED, and prints the CV table
    and best configuration the same study uninterrupted printed (its final model: the test-isolation test)."""
    twin = synthetic_studies
    output = twin.stopped.stdout
    assert twin.stopped.returncode == 130, output[-3000:]
    assert "--resume" in output
    finished, _ = trials_in(output)
    assert len(finished) == 1, output[-3000:]  # stopped in the second trial, the third not started
    assert twin.stopped_status == ["KILLED"]  # never left RUNNING while nothing runs it

    resumed = twin.resumed
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    restarted = [
        line.split()[2] for line in resumed.stdout.splitlines() if line.startswith("== trial") and "started" in line
    ]
    assert not set(finished) & set(restarted), (finished, restarted)  # finished trials are not run again
    picked_up = re.findall(r"\[trial (\w+)\] resumed from its checkpoint after epoch (\d+)", resumed.stdout)
    assert len(picked_up) == 1 and int(picked_up[0][1]) >= 1, resumed.stdout[-3000:]
    for trial_id, epoch in picked_up:  # its first epoch after the resume is the one after its checkpoint
        epochs = re.findall(rf"\[trial {trial_id}\] epoch (\d+)/{twin.EPOCHS}", resumed.stdout)
        # (none when the signal came as it checkpointed its last epoch: then it has nothing left to run again)
        expected = [str(e) for e in range(int(epoch) + 1, twin.EPOCHS + 1)]
        assert epochs == expected, (trial_id, epoch, epochs)
    # the same CV column and best configuration (the twin's test labels are shuffled: its test column differs)
    assert cv_lines(resumed.stdout) == cv_lines(twin.done.stdout)

    uri = twin.twin_uri
    studies, trials = runs_of(uri, "study", "ray_msa-mosei"), runs_of(uri, "trial", "ray_msa-mosei")
    assert len(studies) == 1 and studies[0].info.status == "FINISHED"  # the resumed study continued its own run
    assert len(trials) == 3 and all(t.info.status == "FINISHED" for t in trials)
    assert len(runs_of(uri, "fold", "ray_msa-mosei")) == 6
    resumed_trials = {t.data.tags.get("resumed_from_epoch") for t in trials} - {None}
    assert resumed_trials == {epoch for _, epoch in picked_up}


@pytest.mark.slow
def test_ray_job_submit_runs_a_study_that_its_time_budget_cuts(tmp_path, ray_head):
    """`ray job submit --working-dir . -- python -m ray_msa.tune mosi` to the test run's cluster, which was
    started as documented (`ray start --head`, token authentication); its dashboard binds loopback only and
    refuses a wrong token. The submitted study's time budget ends it mid-fold (one study for both promises: each
    costs a minute of Ray start-up): the cut trials are closed in MLflow (KILLED, tagged), the best of what ran
    is retrained, and the study run finishes."""
    dashboard, token = ray_head.dashboard, ray_head.token
    env = clean_env()
    env.pop("RAY_ADDRESS", None)  # the job reaches its cluster through the dashboard alone
    space = tmp_path / "endless.yaml"
    # long enough for the first trial to report before the cut (20 s after the study started, on 2 idle cores)
    space.write_text(
        "study: {time_budget_min: 0.75}\n"
        "train: {max_epochs: 100000, patience: 100000, batch_size: 32}\n"
        "space: {hidden: 32, post_fusion: 32, dropout: 0.1, lr: {loguniform: [1.0e-3, 2.0e-3]}}\n"
    )
    uri = new_store(tmp_path / "mlflow.db")
    assert listening_addresses(dashboard) == {"127.0.0.1"}
    submit = [
        *RAY,
        "job",
        "submit",
        "--address",
        f"http://127.0.0.1:{dashboard}",
        "--working-dir",
        str(ROOT),
        "--",
        sys.executable,
        "-m",
        "ray_msa.tune",
        "mosi",
        "--data",  # the committed MOSI slice: the job's driver embeds 130 transcripts, not the whole of MOSI
        str(ROOT / "tests" / "data" / "mosi_sample"),
        "--arch",
        "lf_dnn",
        "--trials",
        "2",
        "--folds",
        "2",
        "--space",
        str(space),
        "--test-seeds",
        "1",
        "--storage",
        str(tmp_path / "ray_results"),
        "--tracking-uri",
        uri,
    ]
    agent_deadline = time.time() + 120
    while True:  # the dashboard listens before its job agent has registered: that refusal submits nothing
        job = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=900)
        if "No available agent" not in job.stdout + job.stderr or time.time() > agent_deadline:
            break
        time.sleep(2)
    assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
    assert "succeeded" in job.stdout and "lf_dnn on mosi: " in job.stdout
    assert "time budget of 0.75 min used" in job.stdout and "cut mid-trial (KILLED in MLflow)" in job.stdout
    (study,) = runs_of(uri, "study")
    trials, folds = runs_of(uri, "trial"), runs_of(uri, "fold")
    assert study.info.status == "FINISHED" and len(folds) == 2 * len(trials) and runs_of(uri, "final")
    assert not [r for r in [study, *trials, *folds] if r.info.status == "RUNNING"]
    cut = [r for r in trials if r.data.tags.get("stopped_by") == "time budget"]
    assert cut and all(r.info.status == "KILLED" for r in cut)
    cut_ids = {c.info.run_id for c in cut}
    assert all(f.info.status == "KILLED" for f in folds if f.data.tags["mlflow.parentRunId"] in cut_ids)
    stranger = subprocess.run(
        [*RAY, "job", "list", "--address", f"http://127.0.0.1:{dashboard}"],
        env={**env, "RAY_AUTH_TOKEN": "wrong"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert stranger.returncode != 0  # without the cluster's token, no access
    params = json.dumps([r.data.params for r in trials])
    assert token.read_text() not in params
