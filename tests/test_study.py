"""End-to-end studies through the real command: Ray Tune + Ray Train + MLflow."""

import re

import numpy as np
import pandas as pd
import pytest
from conftest import MOSI_SAMPLE, MosiStudy, SyntheticStudies, library_records, trial_id, tune_command
from mlflow.tracking import MlflowClient

from ray_msa.data import load_dataset
from ray_msa.metrics import METRICS, compute_metrics
from ray_msa.statistics import t_interval

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_cluster")]  # studies join the run's cluster


tune = tune_command  # `python -m ray_msa.tune` in a test's folder, joining the run's cluster


# how each line ray_msa prints during a study begins (Ray's "(name pid=N) " prefix on a worker's lines taken off)
OWN_LINE = re.compile(
    r"(study |resources: |converted |== trial |\[trial |\[final|best trial: |study plot |\w+ on \w+: \d+ trials|"
    r"metric  |-{20}|(MAE|Corr|Acc\d|Has0_\w+|Non0_\w+) |best configuration: |Ray start-up |MLflow: study run |"
    r"Ray's, Tune's, MLflow's and Optuna's messages: )"
)


def library_lines(output: str) -> list[str]:
    """The lines of a study's output that ray_msa did not print."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)  # Ray colours the prefix of a worker's lines
    lines = (re.sub(r"^\(\w+ pid=\d+\) ", "", line) for line in plain.splitlines())
    return [line for line in lines if line.strip() and not OWN_LINE.match(line)]


def runs_by_role(tracking_uri: str, experiment: str) -> dict[str, list]:
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    out: dict[str, list] = {}
    for run in runs:
        out.setdefault(run.data.tags.get("role"), []).append(run)
    return out


@pytest.mark.xdist_group("mosi_study")  # one worker runs the shared study once
def test_study_on_mosi_records_the_tree(mosi_study: MosiStudy, tmp_path, capsys, monkeypatch, library_loggers):
    """On the committed MOSI slice (real text, audio and vision of five videos), the default architecture."""
    done, uri = mosi_study.done, mosi_study.uri
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Has0_Acc2" in done.stdout and "test mean ± std over 2 seeds [95% CI]" in done.stdout
    assert library_lines(done.stdout + done.stderr) == []  # the libraries' messages went to their file
    libraries_log = mosi_study.folder / "ray_results" / "libraries.log"
    assert "A new study created in memory" in libraries_log.read_text()  # Optuna's
    runs = runs_by_role(uri, "ray_msa-mosi")
    assert len(runs["study"]) == 1 and len(runs["trial"]) == 2 and len(runs["fold"]) == 4
    study = runs["study"][0]
    trial_ids = {r.info.run_id for r in runs["trial"]}
    assert all(r.data.tags["mlflow.parentRunId"] == study.info.run_id for r in runs["trial"])
    # the best configuration retrained with seeds 0 and 1, each tested once, with its predictions kept
    seeds = sorted(runs["final"], key=lambda r: int(r.data.tags["seed"]))
    assert [r.data.tags["seed"] for r in seeds] == ["0", "1"]
    assert all(r.data.tags["mlflow.parentRunId"] == study.info.run_id for r in seeds)
    test_split = load_dataset("mosi", MOSI_SAMPLE).splits["test"]
    per_seed = []
    for run in seeds:
        path = MlflowClient(uri).download_artifacts(run.info.run_id, "test_predictions.csv", str(tmp_path))
        table = pd.read_csv(path, dtype={"id": str})
        assert list(table["id"]) == list(test_split.ids) and np.allclose(table["label"], test_split.labels)
        recomputed = compute_metrics("mmsa", table["prediction"].to_numpy(), table["label"].to_numpy())
        assert recomputed["MAE"] == pytest.approx(run.data.metrics["test_MAE"], abs=1e-9)
        per_seed.append(run.data.metrics["test_MAE"])
    assert per_seed[0] != per_seed[1]  # the seed changes the model
    assert seeds[1].info.start_time < seeds[0].info.end_time  # side by side, not one after the other
    mean, std, low, high = t_interval(per_seed)
    assert study.data.metrics["test_MAE"] == pytest.approx(mean, abs=1e-12)
    assert (study.data.metrics["test_std_MAE"], study.data.metrics["test_ci_low_MAE"]) == pytest.approx((std, low))
    assert study.data.metrics["test_ci_high_MAE"] == pytest.approx(high, abs=1e-9)
    assert all(r.data.tags["mlflow.parentRunId"] in trial_ids for r in runs["fold"])
    for name in METRICS:
        assert f"test_{name}" in study.data.metrics and f"cv_mean_{name}" in study.data.metrics
        assert all(f"mean_{name}" in r.data.metrics and f"std_{name}" in r.data.metrics for r in runs["trial"])
        assert all(name in r.data.metrics and f"val_{name}" in r.data.metrics for r in runs["fold"])
    assert all(r.info.status == "FINISHED" for group in runs.values() for r in group)
    assert study.data.tags["data_fingerprint"] and study.data.tags["mlflow.source.git.commit"]
    assert study.data.params["folds"] == "2" and "best.lr" in study.data.params
    client = MlflowClient(uri)
    # the UI opens on training runs, shows the data in its Dataset column, and the study's Optuna plots
    assert client.get_experiment(study.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    for run in [study, *runs["trial"]]:
        (entry,) = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert (entry.dataset.name, entry.dataset.digest) == ("mosi", study.data.tags["data_fingerprint"])
    artifacts = {a.path for a in client.list_artifacts(study.info.run_id)}
    assert {"optuna_history.png", "optuna_importances.png", "optuna_parallel_coordinate.png"} <= artifacts
    history = client.get_metric_history(runs["fold"][0].info.run_id, "val_MAE")
    assert [m.step for m in history] == [0]
    # no checkpoint is left: every trial's runs are closed, the final model is in MLflow
    assert list((mosi_study.folder / "ray_results").glob("**/checkpoint_*")) == []
    # the final model: one logged model (what predict and the servers apply is tested beside this test)
    assert len(client.search_logged_models([study.info.experiment_id])) == 1
    # the comparison table reads the same store
    from ray_msa.compare import collect, render

    rows = collect(uri, "mosi")
    assert [(r["arch"], r["dataset"], r["trials"]) for r in rows] == [("mtl", "mosi", 2)]
    assert rows[0]["test_MAE"] == study.data.metrics["test_MAE"]
    table = render(rows, "md")
    assert table.startswith("| arch | dataset |") and "| mtl | mosi | 2 |" in table
    assert render(rows, "csv").splitlines()[0].startswith("arch,dataset,folds,CV MAE")
    # retest: the study's best configuration trained again from its record reproduces each seed's test
    # number exactly, as a new run beside the study, which compare then shows
    from ray_msa.retest import main as retest_main  # in this process: a subprocess would import it all again

    args = [study.info.run_id, "--data", str(MOSI_SAMPLE), "--tracking-uri", uri, "--storage", str(tmp_path / "rt")]
    capsys.readouterr()
    assert retest_main([*args, "--test-seeds", "2", "--cpus-per-worker", "0.5"]) == 0
    out, err = capsys.readouterr()
    log = (tmp_path / "rt" / "libraries.log").resolve()  # the libraries' messages went to their file
    assert list((tmp_path / "rt").glob("**/checkpoint_*")) == []  # the model is in MLflow
    assert library_records(out + err) == [] and log.is_file()
    assert f"Ray's, Tune's, MLflow's and Optuna's messages: {log} (--verbose prints them)" in out
    (retest,) = [r for r in runs_by_role(uri, "ray_msa-mosi")["study"] if r.info.run_id != study.info.run_id]
    assert retest.data.tags["retest_of"] == study.info.run_id and retest.info.status == "FINISHED"
    assert retest.data.metrics["test_MAE"] == study.data.metrics["test_MAE"]  # same seeds, same models
    assert retest.data.metrics["test_std_MAE"] == study.data.metrics["test_std_MAE"]
    assert retest.data.metrics["cv_mean_MAE"] == study.data.metrics["cv_mean_MAE"]  # the study's CV, copied
    retest_seeds = client.search_runs(
        [study.info.experiment_id], f"tags.`mlflow.parentRunId` = '{retest.info.run_id}' and tags.role = 'final'"
    )
    assert sorted(r.data.tags["seed"] for r in retest_seeds) == ["0", "1"]
    assert all("test_predictions.csv" in {a.path for a in client.list_artifacts(r.info.run_id)} for r in retest_seeds)
    assert [r["run_id"] for r in collect(uri, "mosi")] == [retest.info.run_id]
    # a run that is not a finished study is refused in one line, before Ray starts
    import ray

    capsys.readouterr()
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("ray.init before the input was checked"))
    with pytest.raises(SystemExit) as refused:
        retest_main([runs["fold"][0].info.run_id, "--tracking-uri", uri])
    stderr = capsys.readouterr().err
    assert refused.value.code == 2 and "not a finished study" in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.xdist_group("synthetic_studies")  # one worker builds the shared studies once
def test_text_only_label_csv_directory(synthetic_studies: SyntheticStudies):
    """A label.csv folder without feature files is a text-only dataset: the shared synthetic study is one."""
    assert "modalities text (" in synthetic_studies.done.stdout
    runs = runs_by_role(synthetic_studies.uri, "ray_msa-mosei")
    assert runs["study"][0].info.status == "FINISHED"
    assert len(runs["trial"]) == 3 and len(runs["fold"]) == 6


@pytest.mark.xdist_group("synthetic_studies")  # one worker builds the shared studies once
def test_checkpoints_are_removed_once_used_unless_kept(synthetic_studies: SyntheticStudies):
    """The twin, interrupted in its second trial, resumed from that trial's checkpoint (its first trial's was
    already gone) and then left none; the study run with --keep-checkpoints kept each trial's last."""
    twin = synthetic_studies
    (finished,), (running,) = twin.trials_when_stopped
    assert twin.checkpointed_when_stopped == [running]  # the finished trial's went when its runs were closed
    assert twin.resumed.returncode == 0 and "(resumed)" in twin.resumed.stdout
    assert "resumed from its checkpoint after epoch" in twin.resumed.stdout
    assert list((twin.twin / "ray_results").glob("**/checkpoint_*")) == []
    kept = {trial_id(p) for p in (twin.cwd / "ray_results").glob("*/run_trial_*/checkpoint_*")}
    assert len(kept) == 3  # one per trial


@pytest.mark.xdist_group("synthetic_studies")  # one worker builds the shared studies once
def test_the_test_labels_never_change_a_choice(synthetic_studies: SyntheticStudies):
    """The same study twice, the second time with the test split's labels shuffled (and stopped and resumed on
    the way): every choice (each trial's CV, TPE's proposal from them, the best configuration, the refit's epoch
    count) is identical, and so is the final model's every test prediction; only the test numbers move."""
    twin = synthetic_studies
    assert twin.resumed.returncode == 0, twin.resumed.stdout[-3000:] + twin.resumed.stderr[-3000:]
    studies, predictions = [], []
    for uri in (twin.uri, twin.twin_uri):
        runs = runs_by_role(uri, "ray_msa-mosei")
        trials = sorted(runs["trial"], key=lambda r: r.info.start_time)  # one at a time: the order they ran
        studies.append((runs["study"][0], [(r.data.params, r.data.metrics) for r in trials]))
        (final,) = runs["final"]
        path = MlflowClient(uri).download_artifacts(final.info.run_id, "test_predictions.csv", str(twin.root))
        predictions.append(pd.read_csv(path, dtype={"id": str}))
    (first, first_trials), (second, second_trials) = studies
    assert len(first_trials) == 3  # two random, then TPE's proposal from the first two's CV
    assert first_trials == second_trials  # every trial: the same sampled values and the same CV metrics
    chosen = {k: v for k, v in first.data.params.items() if k.startswith("best.") or k == "final_epochs"}
    assert chosen and chosen == {k: second.data.params[k] for k in chosen}
    cv = {k: v for k, v in first.data.metrics.items() if k.startswith("cv_")}
    assert cv and cv == {k: second.data.metrics[k] for k in cv}
    assert list(predictions[0]["id"]) == list(predictions[1]["id"])
    assert np.array_equal(predictions[0]["prediction"], predictions[1]["prediction"])  # the same final model
    assert not np.array_equal(predictions[0]["label"], predictions[1]["label"])  # the test labels did change
    assert first.data.metrics["test_MAE"] != second.data.metrics["test_MAE"]
