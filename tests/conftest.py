"""Shared fixtures: paths to the real data beside the checkout, offline Hugging Face, one Ray cluster per run."""

from __future__ import annotations

import atexit
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# MLflow's telemetry (on outside CI, for a module imported before a test runs) fetches its settings in a thread that,
# offline, gives up and deletes a variable from os.environ: a test iterating os.environ then (requests does, for
# proxies) failed with KeyError '_MLFLOW_TELEMETRY_SESSION_ID'. Tests send nothing anyway.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# One intra-op thread for the tests' own training (set before torch loads): the models here are tiny, and two
# OpenMP threads that spin while the other core runs a Ray process took up to twice as long. Ray Train workers
# still set the threads their CPUs allow.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Token authentication for every Ray of the test run, set before anything loads Ray (which reads it once per
# process): a `ray start` head here refused clients without a token (InvalidAuthToken) even with RAY_AUTH_MODE
# unset, and a process that loaded Ray without one cannot join. A token of the run's own, not ~/.ray/auth_token.
_TOKEN = Path(tempfile.mkdtemp(prefix="ray_msa_tests_")) / "auth_token"
_TOKEN.write_text(secrets.token_hex(32))
_TOKEN.chmod(0o600)
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(_TOKEN))
# Every Ray Train run starts a preemption watcher (one more actor process) that only acts when a cloud node is
# drained, which no test does; and the controller polls its workers every 0.5 s instead of 2 s.
os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
atexit.register(shutil.rmtree, _TOKEN.parent, True)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RAY = [sys.executable, "-m", "ray.scripts.scripts"]  # the `ray` command of this interpreter, wherever PATH points


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The Ray studies (marked slow) first, in their files' order: the suite runs on two xdist workers (pyproject's
    addopts), and the short tests then fill the gaps at the end instead of one long study running alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def shared_mosi() -> Path:
    """The full real CMU-MOSI files beside the checkout (not on a user's machine): only for the tests that
    compare with them; the readers' tests use tests/data/mosi_sample or the embedded copy, which are always there."""
    path = SHARED / "mosi"
    if not (path / "label.csv").is_file():
        pytest.skip(f"compares with the full real CMU-MOSI files, which are not at {path} (developers' ../shared)")
    return path


@pytest.fixture(autouse=True)
def _scratch(tmp_path_factory, monkeypatch):
    """Frozen text embeddings are cached once per session, never in the user's home; a study run in the test's
    own process keeps its Ray results (checkpoints: hundreds of MB for an image model) in a folder of the test's,
    never in the checkout's ./ray_results."""
    monkeypatch.setenv("RAY_MSA_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("RAY_MSA_STORAGE", str(tmp_path_factory.mktemp("ray_results")))


@pytest.fixture
def no_ray(monkeypatch):
    """Fails the test if anything starts or joins Ray (input must be checked first)."""
    import ray  # heavy: only the tests that use this fixture load it

    if ray.is_initialized():  # an earlier test's Ray: the check below is about this test alone
        ray.shutdown()

    def refuse(*args, **kwargs):
        raise AssertionError("ray.init was called before the input was checked")

    monkeypatch.setattr(ray, "init", refuse)
    yield
    assert not ray.is_initialized()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on `port` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


@dataclass(frozen=True)
class RayHead:
    address: str  # what RAY_ADDRESS holds: host:port of the GCS
    dashboard: int | None  # the dashboard's port: the jobs API (`ray job submit --address http://127.0.0.1:PORT`)
    token: Path  # the run's token file (RAY_AUTH_TOKEN_PATH)


@contextmanager
def started_head(root: Path, cache: Path, dashboard: bool) -> Iterator[RayHead]:
    """A Ray cluster as a user starts one (`ray start --head`), stopped on exit. `--block` ties it to a process of
    ours: SIGINT stops that cluster and nothing else (`ray stop` would stop every Ray on the machine). The
    dashboard (its head and a dozen module processes, which digest every task's events) only where a test needs
    the jobs API: the suite is bound by CPU."""
    port = free_port()
    # the raylet's environment is every worker's: the session's text cache, never the user's home
    env = {**os.environ, "RAY_MSA_CACHE": str(cache)}
    # ...and its own address: Ray Train's actors otherwise look for "the" local cluster, and with several on the
    # machine (another test process's, a user's) its placement-group cleaner fails and a stopped trial's
    # placement group stays reserved, which left a time-budget study waiting forever for its final training
    env["RAY_ADDRESS"] = f"127.0.0.1:{port}"
    # ...and no idle workers started ahead for each new driver (each costs its imports; most went unused here)
    env.update(RAY_prestart_worker_first_driver="0", RAY_enable_worker_prestart="0")
    command = [*RAY, "start", "--head", f"--port={port}", "--num-cpus=2"]
    # ...and a Ray directory of its own, where it notes itself as the machine's "current cluster": Ray's job
    # supervisor starts a job's driver at that address ("auto"), and in the shared /tmp/ray the newest cluster
    # (another xdist worker's) took the job. Short: Ray's socket paths must fit 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="ray_", dir="/tmp"))
    command.append(f"--temp-dir={temp_dir}")
    dashboard_port = free_port() if dashboard else None
    if dashboard:  # the job agent's port too: at its default (52365) a second cluster's agent cannot listen
        command += ["--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"]
        command.append(f"--dashboard-agent-listen-port={free_port()}")
    else:
        command.append("--include-dashboard=false")
    command += ["--disable-usage-stats", "--block"]
    log_path = root / "head.log"
    with log_path.open("w") as log:
        # SIGINT restored for it: a shell runs a background job (`.ci/run &`) with SIGINT ignored, which its children
        # inherit, and then the head ignored stop_head's SIGINT for 60 s
        head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_sigint_default)

    def up() -> bool:  # `ray start` says so once its processes run; the jobs API also needs the dashboard
        started = "Ray runtime started" in log_path.read_text()
        return started and (dashboard_port is None or bool(listening_addresses(dashboard_port)))

    deadline = time.time() + 180
    while not up() and time.time() < deadline and head.poll() is None:
        time.sleep(0.5)
    if head.poll() is not None or not up():
        head.kill()
        raise RuntimeError(f"ray start --head did not come up: {log_path.read_text()[-2000:]}")
    try:
        yield RayHead(f"127.0.0.1:{port}", dashboard_port, _TOKEN)
    finally:
        stop_head(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


@contextmanager
def ray_address(address: str) -> Iterator[None]:
    """RAY_ADDRESS set to `address` for this process and the studies it starts (ray.init() reads it)."""
    saved = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = address
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = saved


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> Iterator[str]:
    """One Ray cluster per test process (each xdist worker's), without a dashboard, started once and joined by
    every study that process's tests start (RAY_ADDRESS, which subprocesses inherit): each study saves Ray's
    start and stop."""
    root, cache = tmp_path_factory.mktemp("ray_cluster"), tmp_path_factory.getbasetemp() / "cache"
    with started_head(root, cache, dashboard=False) as head, ray_address(head.address):
        yield head.address


@pytest.fixture
def ray_head(tmp_path_factory) -> Iterator[RayHead]:
    """A cluster as a `ray job submit` user sees it: with its dashboard (the jobs API), for one test."""
    root, cache = tmp_path_factory.mktemp("ray_head"), tmp_path_factory.getbasetemp() / "cache"
    with started_head(root, cache, dashboard=True) as head, ray_address(head.address):
        yield head


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_head(head: subprocess.Popen) -> None:
    """End a `ray start --head --block` process, which stops its cluster alone."""
    head.send_signal(signal.SIGINT)
    try:
        head.wait(timeout=60)
    except subprocess.TimeoutExpired:  # seen once at the end of a run: SIGTERM, then the head alone is killed
        head.terminate()
        try:
            head.wait(timeout=30)
        except subprocess.TimeoutExpired:
            head.kill()
            head.wait()


_STORE_TEMPLATE = _TOKEN.parent / "mlflow_template.db"  # this test process's, removed with its token


def new_store(path: Path) -> str:
    """The sqlite URI of an empty MLflow store at `path`: a copy of one that MLflow made once per test process.
    Making the tables runs every schema migration (1.5 s a store); opening a copy takes a tenth of that."""
    if not _STORE_TEMPLATE.exists():
        from mlflow.tracking import MlflowClient

        MlflowClient(f"sqlite:///{_STORE_TEMPLATE}").search_experiments()
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_STORE_TEMPLATE, path)
    return f"sqlite:///{path}"


def study_env(cwd: Path, **extra_env: str) -> dict[str, str]:
    """A study subprocess's environment: this one's (with the run's RAY_ADDRESS) less the tracking URI that
    mlflow.set_tracking_uri exports, its Ray results in `cwd`."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, "RAY_MSA_STORAGE": str(cwd / "ray_results"), **extra_env}


def tune_command(*args: str, cwd: Path, timeout: int = 900, **extra_env: str) -> subprocess.CompletedProcess:
    """`python -m ray_msa.tune ARGS` in `cwd` (its store there), joining the run's cluster (RAY_ADDRESS)."""
    env = study_env(cwd, **extra_env)
    if "--tracking-uri" not in args and not (cwd / "mlruns" / "mlflow.db").exists():
        new_store(cwd / "mlruns" / "mlflow.db")  # where the study's default store is
    command = [sys.executable, "-m", "ray_msa.tune", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def start_tune(*args: str, cwd: Path, log: Path, **extra_env: str) -> subprocess.Popen:
    """`python -m ray_msa.tune ARGS` started in `cwd`, its output (stdout and stderr) going to the file `log`."""
    command = [sys.executable, "-u", "-m", "ray_msa.tune", *args]
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=cwd, env=study_env(cwd, **extra_env), stdout=out, stderr=subprocess.STDOUT)


def trial_id(checkpoint: Path) -> str:
    """The Tune trial id of a checkpoint folder (`.../run_trial_<id>_<n>_<params>/checkpoint_<k>`)."""
    return checkpoint.parent.name.split("_")[2]


def trials_in(output: str) -> tuple[list[str], list[str]]:
    """The trials a study's output says finished, and those it says started and have not finished."""
    finished = re.findall(r"== trial (\w+) finished after epoch", output)
    return finished, [t for t in re.findall(r"== trial (\w+) started", output) if t not in finished]


def stop_in_second_trial(process: subprocess.Popen, log: Path, storage: Path) -> None:
    """SIGTERM once a trial has finished and the running one has checkpointed an epoch: Tune writes a report to
    the trial's result.json once it has registered the report's checkpoint."""
    deadline = time.time() + 600
    while process.poll() is None and time.time() < deadline:
        finished, running = trials_in(log.read_text())
        reports = [p for t in running for p in storage.glob(f"*/*{t}*/result.json")]
        if finished and reports and reports[0].read_text().count("\n") >= 1:
            process.send_signal(signal.SIGTERM)
            break
        time.sleep(0.1)
    process.wait(timeout=300)


class SyntheticStudies:
    """Two studies of the same command on a few dozen synthetic text-only samples (a label.csv folder), side by
    side: three lf_dnn trials each, one at a time, of 2 folds x 20 epochs, every epoch checkpointed, no trial
    stopped early (no pruner, patience past the last epoch), one test seed. The first runs straight through. Its
    twin reads the same folder with the test split's labels shuffled, is stopped by SIGTERM once its second trial
    has checkpointed an epoch, and is continued with --resume. The orchestration tests compare the two: the test
    labels never change a choice; an interrupted study resumes to the choices and the model it would have made."""

    EPOCHS = 20

    def __init__(self, root: Path, cache: Path) -> None:
        import numpy as np
        import pandas as pd
        from mlflow.tracking import MlflowClient

        from ray_msa.data.synthetic import make_synthetic, write_label_csv

        self.root = root
        self.data, self.shuffled = root / "data", root / "shuffled"
        write_label_csv(make_synthetic(sizes=(60, 20, 40)), self.data)
        table = pd.read_csv(self.data / "label.csv")
        test_rows = table["mode"] == "test"
        labels = table.loc[test_rows, "label"].to_numpy()
        table.loc[test_rows, "label"] = np.random.default_rng(0).permutation(labels)
        self.shuffled.mkdir()
        table.to_csv(self.shuffled / "label.csv", index=False)
        self.space = root / "lf_dnn.yaml"
        self.space.write_text(
            (ROOT / "ray_msa/spaces/lf_dnn.yaml")
            .read_text()
            .replace("train:\n", "train:\n  checkpoint_every: 1\n")
            .replace("patience: 3", "patience: 100")
        )
        self.cwd, self.twin = root / "study", root / "twin"
        self.cwd.mkdir()
        self.twin.mkdir()
        self.uri = new_store(self.cwd / "mlruns" / "mlflow.db")  # the default store of a study run in `cwd`
        self.twin_uri = new_store(self.twin / "mlflow.db")
        cached = {"RAY_MSA_CACHE": str(cache)}
        kept = [*self.args(self.data), "--keep-checkpoints"]  # its twin drops each trial's once it is closed
        straight = start_tune(*kept, cwd=self.cwd, log=root / "study.log", **cached)
        storage = self.twin / "ray_results"
        twin_args = [*self.args(self.shuffled), "--storage", str(storage), "--tracking-uri", self.twin_uri]
        twin = start_tune(*twin_args, cwd=self.twin, log=root / "stopped.log", **cached)
        stop_in_second_trial(twin, root / "stopped.log", storage)
        self.stopped = subprocess.CompletedProcess(twin.args, twin.returncode, (root / "stopped.log").read_text())
        client = MlflowClient(self.twin_uri)
        experiment = client.get_experiment_by_name("ray_msa-mosei")
        found = client.search_runs([experiment.experiment_id], "tags.role = 'study'") if experiment else []
        self.stopped_status = [r.info.status for r in found]  # while nothing runs it
        # the trials whose checkpoints are left while it is stopped: the closed first one's are gone
        self.checkpointed_when_stopped = sorted({trial_id(p) for p in storage.glob("*/run_trial_*/checkpoint_*")})
        self.trials_when_stopped = trials_in(self.stopped.stdout)
        self.resumed = tune_command("mosei", "--resume", "--storage", str(storage), cwd=self.twin, **cached)
        straight.wait(timeout=900)
        self.done = subprocess.CompletedProcess(straight.args, straight.returncode, (root / "study.log").read_text())
        assert self.done.returncode == 0, self.done.stdout[-3000:]

    def args(self, data: Path) -> list[str]:
        """The study's command line on `data` (a folder with a label.csv)."""
        args = ["mosei", "--data", str(data), "--arch", "lf_dnn", "--trials", "3", "--folds", "2"]
        args += [
            "--epochs",
            str(self.EPOCHS),
            "--seed",
            "3",
            "--test-seeds",
            "1",
            "--space",
            str(self.space),
            "--pruner",
            "none",
        ]
        # one trial at a time: side by side, TPE's third proposal would depend on which trial finished first
        return [*args, "--concurrent", "1", "--cpus-per-worker", "0.5"]


@pytest.fixture(scope="session")
def synthetic_studies(tmp_path_factory, ray_cluster) -> SyntheticStudies:
    return SyntheticStudies(tmp_path_factory.mktemp("synthetic_studies"), tmp_path_factory.getbasetemp() / "cache")


MOSI_SAMPLE = ROOT / "tests" / "data" / "mosi_sample"


@dataclass
class MosiStudy:
    """The default architecture's study on the committed MOSI slice (real text, audio and vision of five
    videos): two trials, two seeds' final models. Its tree, its model applied by `predict`, by the MLflow
    pyfunc server and by Ray Serve are tested on the one study."""

    folder: Path
    done: subprocess.CompletedProcess
    uri: str


def study_runs(uri: str, experiment: str) -> tuple[object, list]:
    """The first study of `experiment` and its final runs by seed."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], "tags.role = 'study'", order_by=["attributes.start_time ASC"])
    study = runs[0]
    finals = client.search_runs(
        [exp.experiment_id], f"tags.role = 'final' and tags.`mlflow.parentRunId` = '{study.info.run_id}'"
    )
    return study, sorted(finals, key=lambda r: int(r.data.tags["seed"]))


@pytest.fixture(scope="session")
def mosi_study(tmp_path_factory, ray_cluster) -> MosiStudy:
    folder = tmp_path_factory.mktemp("mosi_study")
    # half a CPU per worker: two trials, then the two seeds' retrainings, side by side on 2 cores
    args = ("--trials", "2", "--folds", "2", "--epochs", "1", "--test-seeds", "2", "--cpus-per-worker", "0.5")
    done = tune_command("mosi", "--data", str(MOSI_SAMPLE), *args, cwd=folder)
    return MosiStudy(folder, done, f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")


@pytest.fixture
def library_loggers(monkeypatch):
    """The libraries' loggers as they were, and Tune's and MLflow's output settings, back after the test."""
    from ray_msa.console import LIBRARIES

    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", raising=False)
    loggers = [logging.getLogger(name) for name in LIBRARIES]
    saved = [(list(logger.handlers), logger.propagate, logger.level) for logger in loggers]
    yield
    for logger, (handlers, propagate, level) in zip(loggers, saved):
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers, logger.propagate = handlers, propagate
        logger.setLevel(level)


# how a library's log record begins on the console: Ray's and MLflow's "2026-12-05 02:14:01,123 INFO ...", Ray's
# C++ "[2026-12-05 02:14:01,123 E 123 456] core_worker.cc", Tune's boxed banner
LIBRARY_RECORD = re.compile(r"^(\[?\d{4}[-/]\d\d[-/]\d\d \d\d:\d\d:\d\d|[╭│╰])")


def library_records(output: str) -> list[str]:
    """The lines of `output` that a library's logger (or Tune's reporter) printed."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)
    return [line for line in plain.splitlines() if LIBRARY_RECORD.match(re.sub(r"^\(\w+ pid=\d+\) ", "", line))]
