"""`compare` with statistics: test mean ± std and 95% interval over seeds, and pairwise permutation
tests of seed-averaged test predictions, Holm-corrected, on studies written into a real MLflow store."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import new_store
from mlflow.tracking import MlflowClient

from ray_msa.compare import collect, main, pairwise_tests, render, render_tests
from ray_msa.metrics import compute_metrics, metric_function
from ray_msa.statistics import holm, paired_permutation_test, t_interval
from ray_msa.tracking import Tracker

N = 120


def write_study(tracker: Tracker, arch: str, seed_predictions: list[np.ndarray], labels: np.ndarray) -> str:
    """A finished study of `arch` on mosi with one final child run per seed, as `run_study` leaves them."""
    experiment = tracker.experiment("ray_msa-mosi")
    study = tracker.start(experiment, arch, {"role": "study", "arch": arch, "dataset": "mosi", "metric_set": "mmsa"})
    tracker.params(study, {"folds": 5, "metric": "MAE"})
    ids = np.array([f"v{i // 4}$_${i % 4}" for i in range(N)])
    per_seed = []
    for seed, prediction in enumerate(seed_predictions):
        child = tracker.child(study, f"final-seed-{seed}", {"role": "final", "seed": str(seed)})
        tracker.predictions(child, ids, labels, prediction)
        per_seed.append(compute_metrics("mmsa", prediction, labels)["MAE"])
        tracker.metrics(child, {"test_MAE": per_seed[-1]})
        tracker.finish(child)
    mean, std, low, high = t_interval(per_seed)
    values = {"test_MAE": mean, "test_std_MAE": std, "test_ci_low_MAE": low, "test_ci_high_MAE": high}
    tracker.metrics(study, values | {"cv_mean_MAE": 0.8, "cv_std_MAE": 0.05, "final_seeds": len(seed_predictions)})
    tracker.finish(study)
    return study


@pytest.fixture()
def store(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.round(rng.uniform(-3, 3, N), 1)
    good = [labels + 0.6 * rng.normal(size=N) for _ in range(3)]
    uri = new_store(tmp_path / "mlflow.db")
    tracker = Tracker(uri)
    write_study(tracker, "good", good, labels)
    write_study(tracker, "same", [p.copy() for p in good], labels)  # identical predictions, seed by seed
    write_study(tracker, "shifted", [p + 0.8 for p in good], labels)
    return uri, labels, good


def test_the_table_shows_the_interval_over_seeds(store):
    uri, labels, good = store
    rows = collect(uri, "mosi")
    assert [r["arch"] for r in rows] == ["good", "same", "shifted"] and rows[0]["seeds"] == 3
    mean, std, low, high = t_interval([compute_metrics("mmsa", p, labels)["MAE"] for p in good])
    assert f"{mean:.4f} ± {std:.4f} [{low:.4f}, {high:.4f}]" in render(rows, "md")


def test_identical_models_are_not_different_and_a_shifted_one_is(store):
    uri, labels, good = store
    tests = {(t["first"], t["second"]): t for t in pairwise_tests(MlflowClient(uri), collect(uri, "mosi"), 2000)}
    assert tests[("good", "same")]["difference"] == 0.0 and tests[("good", "same")]["p"] == 1.0
    assert not tests[("good", "same")]["significant"]
    shifted = tests[("good", "shifted")]
    assert shifted["difference"] < 0 and shifted["significant"] and shifted["better"] == "good"
    # the test is on the seed-averaged predictions; Holm over the dataset's three pairs
    averaged = np.mean(good, axis=0)
    mae = metric_function("mmsa", "MAE")
    expected = paired_permutation_test(labels, averaged, averaged + 0.8, mae, 2000, 0)
    assert (shifted["difference"], shifted["p"]) == pytest.approx(expected, abs=1e-12)
    ps = [tests[k]["p"] for k in [("good", "same"), ("good", "shifted"), ("same", "shifted")]]
    assert [tests[k]["p_holm"] for k in [("good", "same"), ("good", "shifted"), ("same", "shifted")]] == holm(ps)
    table = render_tests(list(tests.values()), "md")
    assert "| mosi | good | shifted | MAE |" in table and "* good better" in table


def test_compare_logs_a_comparison_run_with_the_plot(store, tmp_path, capsys):
    uri, _, _ = store
    assert main(["--tracking-uri", uri, "--plot", str(tmp_path / "cmp.png"), "--resamples", "500"]) == 0
    assert (tmp_path / "cmp.png").stat().st_size > 5000
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("ray_msa-comparisons").experiment_id])
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"comparison.md", "significance.md", "cmp.png"}
    assert "significance" not in capsys.readouterr().err


@pytest.mark.parametrize("metric_set, name", [("mmsa", "MAE"), ("sims", "MAE"), ("classes", "Acc"), ("mmsa", "Corr")])
def test_the_fast_metric_path_equals_compute_metrics(metric_set, name):
    rng = np.random.default_rng(1)
    if metric_set == "classes":
        truth, pred = rng.integers(0, 3, 50), rng.normal(size=(50, 3))
    else:
        truth, pred = rng.uniform(-3, 3, 50), rng.uniform(-3, 3, 50)
    assert metric_function(metric_set, name)(truth, pred) == compute_metrics(metric_set, pred, truth)[name]
