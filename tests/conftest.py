"""Shared fixtures: paths to the real data beside the checkout, offline Hugging Face, one Ray cluster per run."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Token authentication for every Ray of the test run, set before anything loads Ray (which reads it once per
# process): a `ray start` head here refused clients without a token (InvalidAuthToken) even with RAY_AUTH_MODE
# unset, and a process that loaded Ray without one cannot join. A token of the run's own, not ~/.ray/auth_token.
_TOKEN = Path(tempfile.mkdtemp(prefix="ray_msa_tests_")) / "auth_token"
_TOKEN.write_text(secrets.token_hex(32))
_TOKEN.chmod(0o600)
os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(_TOKEN))
atexit.register(shutil.rmtree, _TOKEN.parent, True)

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
RAY = [sys.executable, "-m", "ray.scripts.scripts"]  # the `ray` command of this interpreter, wherever PATH points


@pytest.fixture(scope="session")
def shared_mosi() -> Path:
    """The full real CMU-MOSI files beside the checkout (not on a user's machine): only for the tests that
    compare with them; the readers' tests use tests/data/mosi_sample or the embedded copy, which are always there."""
    path = SHARED / "mosi"
    if not (path / "label.csv").is_file():
        pytest.skip(f"compares with the full real CMU-MOSI files, which are not at {path} (developers' ../shared)")
    return path


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Frozen text embeddings are cached once per session, never in the user's home."""
    monkeypatch.setenv("RAY_MSA_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


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


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> Iterator[str]:
    """One Ray cluster for the whole test run, as a user runs one (`ray start --head`), started once and joined
    by every study the tests start (RAY_ADDRESS, which subprocesses inherit and ray.init() reads): each study
    saves Ray's start and stop. `--block` ties the cluster to this process: SIGINT at the end stops it and
    nothing else (`ray stop` would stop every Ray on the machine)."""
    root = tmp_path_factory.mktemp("ray_cluster")
    port, dashboard = free_port(), free_port()
    # the raylet's environment is every worker's: the session's text cache, never the user's home
    env = {**os.environ, "RAY_MSA_CACHE": str(tmp_path_factory.getbasetemp() / "cache")}
    env.pop("RAY_ADDRESS", None)
    command = [*RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--dashboard-host=127.0.0.1"]
    command += [f"--dashboard-port={dashboard}", "--disable-usage-stats", "--block"]
    with (root / "head.log").open("w") as log:
        head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while not listening_addresses(dashboard) and time.time() < deadline and head.poll() is None:
        time.sleep(0.5)
    if head.poll() is not None or not listening_addresses(dashboard):
        head.kill()
        raise RuntimeError(f"ray start --head did not come up: {(root / 'head.log').read_text()[-2000:]}")
    address = f"127.0.0.1:{port}"
    saved = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = address
    try:
        yield address
    finally:
        if saved is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = saved
        stop_head(head, port)


def stop_head(head: subprocess.Popen, port: int) -> None:
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
    # ...but leaves its address as the machine's "current cluster", which a later ray.init() would join
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if current.is_file() and current.read_text().strip().endswith(f":{port}"):
        current.unlink()
