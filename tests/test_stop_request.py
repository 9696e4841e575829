"""A signal while Tune runs stops the study as interrupted, even when no trial was mid-run: Tune is asked to end
its run through SIGUSR1 (and then reports its waiting trials as ended, so only the request itself tells), and
a second signal, or one outside tuning, stops at once."""

from __future__ import annotations

import os
import signal

import pytest

from ray_msa.study import StopRequest


class FakeTuner:
    """Installs a SIGUSR1 handler as Tune does inside fit(), then receives SIGTERM."""

    def __init__(self) -> None:
        self.tune_told = 0

    def fit(self):
        assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "1"  # Tune leaves SIGINT to the study
        signal.signal(signal.SIGUSR1, lambda *_: setattr(self, "tune_told", self.tune_told + 1))
        signal.raise_signal(signal.SIGTERM)
        return "grid"


@pytest.fixture
def stop(monkeypatch):
    request = StopRequest()
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    signal.signal(signal.SIGTERM, request)
    signal.signal(signal.SIGINT, request)
    monkeypatch.delenv("TUNE_DISABLE_SIGINT_HANDLER", raising=False)
    yield request
    for sig, handler in saved.items():
        signal.signal(sig, handler)


def test_a_signal_while_tuning_asks_tune_to_stop_and_is_remembered(stop):
    tuner = FakeTuner()
    assert stop.fit(tuner) == "grid"
    assert stop.requested and tuner.tune_told == 1 and not stop.tuning
    assert "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ  # restored
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # no stale Tune handler to ask next time
    with pytest.raises(KeyboardInterrupt):  # outside tuning (the final training): at once
        signal.raise_signal(signal.SIGINT)


def test_a_second_signal_while_tuning_stops_at_once(stop):
    stop.tuning = True
    signal.signal(signal.SIGUSR1, lambda *_: None)
    signal.raise_signal(signal.SIGINT)
    assert stop.requested
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGTERM)


def test_a_new_study_starts_without_the_last_ones_request(stop):
    stop.requested = True

    class Quiet:
        def fit(self):
            return "grid"

    assert stop.fit(Quiet()) == "grid" and not stop.requested
