"""Shared fixtures: paths to the real data beside the checkout, offline Hugging Face."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


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
