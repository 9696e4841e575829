"""Ablations: every variant changes exactly what it says, a modality subset never reads the
dropped arrays, the table's paired test is scipy's, and `ablate mosi --arch mtl` runs end to
end on Ray, recorded as ablation run -> variant runs -> fold runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import library_records, new_store
from mlflow.tracking import MlflowClient
from scipy import stats

from ray_msa.ablate import ablation_table, variants_of
from ray_msa.data.synthetic import make_synthetic
from ray_msa.grid import GridResult, PointResult
from ray_msa.search_space import trial_config
from ray_msa.statistics import paired_fold_test
from ray_msa.train.loop import WorkerContext, run_cross_validation


class Untouchable:
    """An array's shape and type that fails the test if anything reads its values."""

    def __init__(self, like: np.ndarray) -> None:
        self.shape, self.dtype, self.ndim = like.shape, like.dtype, like.ndim

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        raise AssertionError("a dropped modality's array was read")

    def __array__(self, *args, **kwargs):
        raise AssertionError("a dropped modality's array was read")


def test_modality_subset_never_reads_the_dropped_arrays():
    ds = make_synthetic(sizes=(64, 16, 16), signal={"text": 2.0, "audio": 1.0, "vision": 1.0}, seed=3)
    for split in ds.splits.values():
        split.audio = Untouchable(split.audio)
    trial = trial_config("lf_dnn", {"hidden": 8, "post_fusion": 8, "max_epochs": 1, "folds": 2})
    with pytest.raises(AssertionError, match="dropped modality"):
        run_cross_validation(trial, ds, lambda m, s: None, WorkerContext())
    summary = run_cross_validation(
        replace(trial, modalities=("text", "vision")), ds, lambda m, s: None, WorkerContext()
    )
    assert np.isfinite(summary["mean_MAE"])


def test_variants_are_the_reference_the_subsets_and_the_declared_ones():
    ds = make_synthetic(sizes=(32, 8, 8), seed=1)
    trial = trial_config("awf")
    variants = variants_of(trial, ds)
    assert list(variants) == ["full", "T", "A", "V", "T+A", "T+V", "A+V", "no_bfusion", "no_afusion", "afusion_frozen"]
    assert variants["full"] == trial and variants["T+V"].modalities == ("text", "vision")
    assert variants["no_afusion"].model == trial.model.replace(afusion=False)
    assert all(v.model == trial.model for k, v in variants.items() if "+" in k or len(k) == 1)
    cenet = variants_of(trial_config("cenet", {}, trial.text.replace(mode="finetune")), ds)
    assert [k for k in cenet if k not in ("full", "no_ce")] == ["T", "T+A", "T+V"]  # it cannot drop the text
    image_text = variants_of(trial_config("image_text"), ds)
    assert list(image_text) == ["image+text", "image", "text"]  # its declared variant is the reference


def test_paired_fold_test_is_scipys_paired_t():
    a, b = [0.80, 0.74, 0.77, 0.83, 0.79], [0.75, 0.73, 0.70, 0.80, 0.74]
    delta, p = paired_fold_test(a, b)
    assert delta == pytest.approx(np.mean(np.subtract(a, b)), abs=1e-12)
    assert p == pytest.approx(stats.ttest_rel(a, b).pvalue, abs=1e-12) and p < 0.05
    assert np.isnan(paired_fold_test(b, b)[1])  # identical folds: no test


def test_ablation_table_compares_each_variant_with_the_reference():
    ds = make_synthetic(sizes=(32, 8, 8), seed=1)
    trial = trial_config("lf_dnn")

    def point(name, maes):
        return PointResult(name, trial, "run", {"MAE": float(np.mean(maes))}, {"MAE": float(np.std(maes))},
                           {"MAE": maes}, [1, 1, 1], 1.0)  # fmt: skip

    full, text = [0.70, 0.72, 0.74], [0.80, 0.85, 0.83]
    result = GridResult("parent", "MAE", {"full": point("full", full), "T": point("T", text)}, 1.0, None)
    table = ablation_table(result, "full", ds, "csv").splitlines()
    assert table[0].startswith("variant,MAE,") and table[0].endswith("ΔMAE vs full,p (paired t)")
    row = table[2].split(",")
    assert row[0] == "T" and row[-2] == f"{np.mean(text) - np.mean(full):+.4f}"
    assert row[-1] == f"{stats.ttest_rel(text, full).pvalue:.3f}"
    assert table[1].split(",")[-2:] == ["-", "-"]


def test_ablate_mosi_mtl_runs_end_to_end_on_ray(tmp_path, capsys, ray_cluster, library_loggers):
    """On the committed MOSI slice (real text, audio and vision of five videos: tiny, three modalities)."""
    from ray_msa.ablate import main as ablate

    uri = new_store(tmp_path / "mlflow.db")
    sample = Path(__file__).parent / "data" / "mosi_sample"
    argv = ["mosi", "--data", str(sample), "--arch", "mtl", "--variants", "T+A,no_polarity", "--folds", "2"]
    argv += ["--epochs", "1", "--cpus-per-worker", "0.5"]  # the three variants side by side
    argv += [
        "--tracking-uri",
        uri,
        "--storage",
        str(tmp_path / "ray"),
        "--format",
        "md",
        "--out",
        str(tmp_path / "t.md"),
    ]
    import ray

    assert ablate(argv) == 0
    assert not ray.is_initialized()  # it let go of the Ray it joined
    out, err = capsys.readouterr()
    # the libraries' messages went to their file, which the last line names
    log = (tmp_path / "ray" / "libraries.log").resolve()
    assert library_records(out + err) == [] and log.is_file()
    assert f"Ray's, Tune's, MLflow's and Optuna's messages: {log} (--verbose prints them)" in out  # its last line
    rows = [line.split("|")[1].strip() for line in (tmp_path / "t.md").read_text().splitlines()[2:]]
    assert rows == ["full", "T+A", "no_polarity"] and "| ΔMAE vs full |" in out
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ray_msa-mosi")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.role = 'ablation'")
    assert parent.info.status == "FINISHED"
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"ablation.md", "ablation.csv"}
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.data.tags["point"] for c in children) == ["T+A", "full", "no_polarity"]
    by_name = {c.data.tags["point"]: c for c in children}
    assert by_name["T+A"].data.params["data.modalities"] == "text+audio"
    assert by_name["no_polarity"].data.params["model.polarity_task"] == "False"
    for child in children:
        folds = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{child.info.run_id}'")
        assert len(folds) == 2


@pytest.mark.parametrize("command", ["ablate", "sweep"])
@pytest.mark.parametrize("arch, mode", [("cenet", "finetune"), ("mtl", "frozen")])
def test_without_a_study_the_start_reads_text_as_the_architecture_does(tmp_path, command, arch, mode):
    """No study in the store: the space's start configuration, with the text input the architecture
    reads (CENet fine-tunes its LM on token ids; frozen-LM states would leave it nothing to read)."""
    from ray_msa import ablate, sweep

    parse = ablate.parse_args if command == "ablate" else sweep.parse_args
    extra = [] if command == "ablate" else ["--param", "dropout", "--values", "0.1,0.2"]
    args = parse(["mosi", "--arch", arch, "--tracking-uri", f"sqlite:///{tmp_path / 'none.db'}", *extra])
    trial, origin = ablate.chosen_configuration(args, args.tracking_uri)
    assert (trial.arch, trial.text.mode) == (arch, mode) and "start configuration" in origin
