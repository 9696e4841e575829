"""Robustness protocols: masks keep what they promise, conditions remove exactly what they name, level 0 is the
clean evaluation, the scores match hand-computed cases, and training with missing inputs masks as evaluation does."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import MOSI_SAMPLE, MosiStudy, study_runs
from mlflow.tracking import MlflowClient

from ray_msa.compare import collect, render
from ray_msa.config import TextConfig
from ray_msa.data import load_dataset
from ray_msa.data.dataset import Split
from ray_msa.data.folds import development_pool
from ray_msa.data.text import MAX_TEXT_TOKENS, embed_frozen, tokenize
from ray_msa.models import REGISTRY
from ray_msa.robustness.__main__ import main as robustness
from ray_msa.robustness.evaluate import conditions, evaluate, summary
from ray_msa.robustness.masks import keep_mask, training_rates, valid_positions
from ray_msa.robustness.protocols import Condition, TextInput, frame_stds, modality_conditions, perturb
from ray_msa.robustness.scores import effective_robustness, relative_robustness
from ray_msa.robustness.text_noise import noisy_text
from ray_msa.search_space import load_space
from ray_msa.serving.stored import StoredModel, write_model_files
from ray_msa.study import model_record
from ray_msa.train.loop import WorkerContext, cross_validate
from ray_msa.train.missing import MissingInputs

FROZEN = TextInput("frozen", "minilm", MAX_TEXT_TOKENS)
CLS, SEP, UNK = 101, 102, 100


@pytest.fixture(scope="module")
def mosi():
    return load_dataset("mosi", MOSI_SAMPLE)


def sequences(n: int = 400, width: int = 30, dim: int = 6, seed: int = 0) -> Split:
    """A split of audio and vision sequences of random lengths whose padding holds a sentinel (7.0)."""
    rng = np.random.default_rng(seed)
    lengths = {m: rng.integers(1, width + 1, n) for m in ("audio", "vision")}
    arrays = {}
    for m, length in lengths.items():
        x = rng.normal(3.0, 2.0, (n, width, dim)).astype(np.float32)
        x[~valid_positions(length, width)] = 7.0
        arrays[m], arrays[f"{m}_lengths"] = x, length
    ids = np.array([str(i) for i in range(n)])
    return Split(ids=ids, video_ids=ids, labels=rng.normal(size=n).astype(np.float32), **arrays)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_masks_keep_one_minus_r_of_valid_elements_and_never_touch_padding(rate):
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 51, 4000)
    keep = keep_mask(lengths, 50, rate, rng)
    valid = valid_positions(lengths, 50)
    assert keep[~valid].all()
    assert keep[valid].mean() == pytest.approx(1 - rate, abs=0.006)  # about 100k elements: 4 sigma
    ends = keep_mask(lengths, 50, rate, np.random.default_rng(1), keep_ends=True)
    rows = np.flatnonzero(lengths > 0)
    assert ends[rows, 0].all() and ends[rows, lengths[rows] - 1].all() and ends[~valid].all()
    # per-sample rates
    rates = np.where(np.arange(4000) % 2 == 0, 0.0, 0.8)
    per_sample = keep_mask(lengths, 50, rates, rng)
    assert per_sample[::2].all() and per_sample[1::2][valid[1::2]].mean() == pytest.approx(0.2, abs=0.01)


def test_training_rates_leave_half_the_samples_complete():
    rates = training_rates(1001, 0.6, np.random.default_rng(0))
    assert (rates == 0).sum() == 501 and (rates <= 0.6).all()
    assert rates[rates > 0].mean() == pytest.approx(0.3, abs=0.03)
    assert not np.array_equal(rates, training_rates(1001, 0.6, np.random.default_rng(1)))


def test_feature_missing_masks_tokens_and_frames_and_is_seeded(mosi):
    test = mosi.splits["test"]
    clean_ids, clean_mask = tokenize(test.raw_text)
    lengths = clean_mask.sum(1)
    out = perturb(test, Condition("feature_missing", 0.5, seed=0), FROZEN, {})
    ids = out.text_ids
    assert np.array_equal(out.text_mask, clean_mask) and np.array_equal(out.text_lengths, lengths)
    assert (ids[:, 0] == CLS).all() and (ids[np.arange(len(ids)), lengths - 1] == SEP).all()
    inner = valid_positions(lengths - 1, ids.shape[1]) & ~np.eye(1, ids.shape[1], 0, bool)  # between CLS and SEP
    changed = ids != clean_ids
    assert (ids[changed] == UNK).all() and not changed[~inner].any()
    assert changed[inner & (clean_ids != UNK)].mean() == pytest.approx(0.5, abs=0.07)
    again = perturb(test, Condition("feature_missing", 0.5, seed=0), FROZEN, {})
    other = perturb(test, Condition("feature_missing", 0.5, seed=1), FROZEN, {})
    assert np.array_equal(again.text_ids, ids) and np.array_equal(again.audio, out.audio)
    assert not np.array_equal(other.text_ids, ids)
    assert np.array_equal(test.raw_text, out.raw_text) and test.text_ids is None  # the clean split is untouched
    # frames: zero where dropped, unchanged where kept, padding (7.0) never touched
    split = sequences()
    dropped = perturb(split, Condition("feature_missing", 0.3, seed=0), FROZEN, {})
    for m in ("audio", "vision"):
        x, y, valid = getattr(split, m), getattr(dropped, m), valid_positions(getattr(split, f"{m}_lengths"), 30)
        assert (y[~valid] == 7.0).all()
        zero = (y == 0).all(-1) & valid
        assert np.array_equal(y[valid & ~zero], x[valid & ~zero])
        assert zero[valid].mean() == pytest.approx(0.3, abs=0.02)
    assert not np.array_equal(
        dropped.audio, perturb(split, Condition("feature_missing", 0.3, seed=1), FROZEN, {}).audio
    )


def test_modality_missing_zeroes_exactly_the_named_modalities(mosi):
    test = mosi.splits["test"]
    clean_ids, _ = tokenize(test.raw_text)
    assert modality_conditions(("text", "audio", "vision")) == [
        ("text",),
        ("audio",),
        ("vision",),
        ("text", "audio"),
        ("text", "vision"),
        ("audio", "vision"),
    ]
    for present in modality_conditions(("text", "audio", "vision")):
        out = perturb(test, Condition("modality_missing", present=present), FROZEN, {})
        for m in ("audio", "vision"):
            expected = getattr(test, m) if m in present else np.zeros_like(getattr(test, m))
            assert np.array_equal(getattr(out, m), expected)
        if "text" in present:
            assert np.array_equal(out.text_ids, clean_ids)
        else:  # an empty transcript: [CLS] [SEP] and nothing else
            assert (out.text_ids[:, :2] == [CLS, SEP]).all() and (out.text_ids[:, 2:] == 0).all()
            assert (out.text_lengths == 2).all()


def test_noise_adds_scaled_gaussian_noise_and_drops_frames():
    split = sequences(n=2000)
    stds = {m: frame_stds(getattr(split, m), getattr(split, f"{m}_lengths")) for m in ("audio", "vision")}
    out = perturb(split, Condition("noise", 0.4, seed=0), FROZEN, stds)
    valid = valid_positions(split.audio_lengths, 30)
    assert (out.audio[~valid] == 7.0).all()
    dropped = (out.audio == 0).all(-1) & valid
    assert dropped[valid].mean() == pytest.approx(0.4, abs=0.01)
    kept = valid & ~dropped
    residual = (out.audio - split.audio)[kept] / stds["audio"]
    assert residual.std() == pytest.approx(0.4, rel=0.02) and abs(residual.mean()) < 0.01
    same = perturb(split, Condition("noise", 0.0, seed=3), FROZEN, stds)
    assert np.array_equal(same.audio, split.audio) and np.array_equal(same.vision, split.vision)


def test_text_noise_changes_only_long_words(mosi):
    test = mosi.splits["test"]
    out = perturb(test, Condition("noise", 0.9, seed=0), FROZEN, {})
    assert not np.array_equal(out.text_ids, tokenize(test.raw_text)[0])
    text = "a big cat sat on the wonderful, amazing mat"
    noisy = noisy_text(text, 1.0, np.random.default_rng(0))
    words, changed = text.split(), noisy.split()
    assert len(words) == len(changed)
    for before, after in zip(words, changed):
        assert (before == after) if len(before) <= 3 else (before != after and after[0] == before[0])
    assert noisy_text(text, 0.0, np.random.default_rng(0)) == text


def test_relative_and_effective_robustness_match_hand_computed_areas():
    levels = np.round(np.arange(10) * 0.1, 1)
    values = 1.0 - levels  # 1.0 ... 0.1
    assert relative_robustness(levels, values) == pytest.approx(0.495, abs=1e-12)  # 0.1 * (5.5 - 0.55)
    baseline = 0.8 - 2 * levels  # shifted to start at 1.0 it is 1 - 2 level: the gap is the level itself
    assert effective_robustness(levels, values, baseline, "Non0_Acc2") == pytest.approx(0.405, abs=1e-12)
    assert effective_robustness(levels, values, baseline, "MAE") == pytest.approx(-0.405, abs=1e-12)
    flat = relative_robustness(levels, np.full(10, 0.7))
    assert flat == pytest.approx(0.63, abs=1e-12)


def stored_model(tmp_path, dataset) -> StoredModel:
    """An untrained mtl on the MOSI slice, written and loaded as a study's model is."""
    space = load_space("mtl")
    trial = space.build(space.start_for(), {"metric": "MAE"}, TextConfig())
    prepared = trial.spec.prepare_text(dataset, trial.text)
    torch.manual_seed(0)
    network = trial.spec.for_dataset(prepared, trial.model, trial.text).eval()
    network.set_input_stats({m: (torch.randn(d), torch.rand(d) + 0.5) for m, d in (("audio", 73), ("vision", 100))})
    write_model_files(tmp_path / "model", network, model_record(prepared, trial) | {"members": 0})
    return StoredModel.from_directory(tmp_path / "model")


def test_level_zero_reproduces_the_clean_metrics_exactly(tmp_path, mosi):
    stored = stored_model(tmp_path, mosi)
    test = stored.prepare(mosi, "mosi").splits["test"]
    clean = stored.metrics(test, stored.raw_predictions(test))
    chosen = [Condition("feature_missing", 0.0), Condition("noise", 0.0), Condition("feature_missing", 0.5)]
    (table,) = evaluate([stored], mosi, "test", [chosen], "mosi")
    names = list(clean)
    assert table.loc[0, names].to_dict() == clean
    assert table.loc[1, names].to_dict() == clean
    assert table.loc[2, "MAE"] != clean["MAE"]
    # levels 0 are drawn once, the others once per seed; modality conditions once
    listed = conditions("feature_missing", ("text", "audio", "vision"), (0.0, 0.1, 0.2), 3)
    assert [(c.level, c.seed) for c in listed] == [(0.0, 0), (0.1, 0), (0.1, 1), (0.1, 2), (0.2, 0), (0.2, 1), (0.2, 2)]
    assert len(conditions("modality_missing", ("text", "audio", "vision"), (0.0, 0.1), 3)) == 6
    scores = summary(table.iloc[[0, 2]], "MAE", table.iloc[[0, 2]])
    assert scores["effective_robustness_MAE"] == pytest.approx(0.0, abs=1e-12)


def test_training_with_missing_inputs_masks_as_the_evaluation_does(mosi):
    space = load_space("mtl")
    trial = space.build(space.start_for(), {"metric": "MAE", "missing_rate": 0.8}, TextConfig())
    dataset = trial.spec.prepare_text(mosi, trial.text)
    pool = development_pool(dataset)
    rows = np.arange(len(pool))
    missing = MissingInputs(0.8, trial.spec, trial.text, dataset)
    (out,) = missing.epoch(pool, [rows], np.random.default_rng(0))
    clean_ids, mask = tokenize(pool.raw_text)
    changed = np.flatnonzero((out.audio != pool.audio).any((1, 2)) | (out.vision != pool.vision).any((1, 2)))
    text_changed = np.flatnonzero((out.text != pool.text).any((1, 2)))
    untouched = np.setdiff1d(rows, np.union1d(changed, text_changed))
    assert len(untouched) >= len(rows) // 2  # half the samples complete, some of the others lose nothing
    assert len(text_changed) > 5 and (out.audio[changed] == 0).any()
    assert np.array_equal(out.text[untouched], pool.text[untouched])
    # a masked sample's text states are the frozen LM's states of its masked tokens
    (again,) = missing.epoch(pool, [rows], np.random.default_rng(0))
    halves = list(missing.epoch(pool, [rows[:40], rows[40:]], np.random.default_rng(0)))  # two batches, one draw
    assert len(halves) == 2 and np.array_equal(halves[1].ids, pool.ids[40:])
    assert np.array_equal(again.text, out.text) and np.array_equal(again.audio, out.audio)
    k = text_changed[0]
    rng = np.random.default_rng(0)
    rates = training_rates(len(rows), 0.8, rng)
    keep = keep_mask(mask.sum(1), mask.shape[1], rates, rng, keep_ends=True)
    masked = np.where(keep, clean_ids, UNK)
    expected = embed_frozen(masked[k : k + 1], mask[k : k + 1])
    assert np.abs(out.text[k] - expected[0]).max() < 1e-5
    # the loop trains with it: the same seed gives the same losses, and they differ from clean training
    small = {"max_epochs": 1, "folds": 2, "metric": "MAE"}
    runs = [
        cross_validate(
            space.build(space.start_for(), {**small, "missing_rate": r}, TextConfig()), dataset, noop, WorkerContext()
        )
        for r in (0.0, 0.8, 0.8)
    ]
    losses = [[f.history[0]["train_loss"] for f in folds] for folds in runs]
    assert losses[1] == losses[2] and losses[0] != losses[1]


def noop(metrics, state) -> None:
    return None


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_missing_rate_is_a_training_setting_of_every_architecture(arch):
    space = load_space(arch)
    assert space.build(space.start_for(), {"missing_rate": 0.5}).train.missing_rate == 0.5
    assert space.build(space.start_for()).train.missing_rate == 0.0
    with pytest.raises(Exception, match="missing_rate"):
        space.build(space.start_for(), {"missing_rate": 1.0})


def test_untouched_clean_split(mosi):
    """Every protocol returns new arrays: the split it was given (in-memory float32 frames too) stays as it was."""
    test = mosi.splits["test"]
    before = replace(test)
    perturb(test, Condition("noise", 0.5, seed=0), FROZEN, {"audio": np.ones(73, np.float32), "vision": np.ones(100)})
    assert np.array_equal(before.audio, test.audio) and np.array_equal(before.raw_text, test.raw_text)
    frames = sequences()
    copies = {m: getattr(frames, m).copy() for m in ("audio", "vision")}
    for condition in (Condition("noise", 0.5), Condition("feature_missing", 0.5), Condition("modality_missing")):
        perturb(frames, condition, FROZEN, {})
        assert all(np.array_equal(getattr(frames, m), copies[m]) for m in copies)


@pytest.mark.slow
@pytest.mark.xdist_group("mosi_study")  # the worker that ran the shared study
def test_robustness_command_logs_its_curves_under_the_study(mosi_study: MosiStudy, tmp_path, capsys):
    """Each protocol is a `robustness` child of the model's study; level 0 scores what the study tested (the
    logged model is its first seed's), the area is the trapezoid of the logged levels, compare shows it."""
    assert mosi_study.done.returncode == 0, mosi_study.done.stdout[-3000:] + mosi_study.done.stderr[-3000:]
    uri = mosi_study.uri
    study, finals = study_runs(uri, "ray_msa-mosi")
    args = ["--model", study.info.run_id, "--data", str(MOSI_SAMPLE), "--tracking-uri", uri, "--seeds", "2"]
    protocols = ["--protocol", "feature_missing", "modality_missing", "--levels", "0", "0.5"]
    assert robustness([*args, *protocols]) == 0
    client = MlflowClient(uri)
    query = f"tags.role = 'robustness' and tags.`mlflow.parentRunId` = '{study.info.run_id}'"
    runs = {r.data.tags["protocol"]: r for r in client.search_runs([study.info.experiment_id], query)}
    assert set(runs) == {"feature_missing", "modality_missing"}
    missing = runs["feature_missing"]
    tested = {k[len("test_") :]: v for k, v in finals[0].data.metrics.items() if k.startswith("test_")}
    for name, value in tested.items():
        steps = {m.step: m.value for m in client.get_metric_history(missing.info.run_id, name)}
        assert set(steps) == {0, 1} and steps[0] == pytest.approx(value, abs=1e-6)  # levels 0 and 0.5
    acc = {m.step: m.value for m in client.get_metric_history(missing.info.run_id, "Non0_Acc2")}
    area = missing.data.metrics["relative_robustness_Non0_Acc2"]
    assert area == pytest.approx(0.5 * (acc[0] + acc[1]) / 2, abs=1e-12)
    assert "effective_robustness_Non0_Acc2" not in missing.data.metrics  # this store has no lf_dnn study
    table = pd.read_csv(client.download_artifacts(missing.info.run_id, "robustness_feature_missing.csv", str(tmp_path)))
    assert list(zip(table["level"], table["seed"])) == [(0.0, 0), (0.5, 0), (0.5, 1)]
    assert {a.path for a in client.list_artifacts(missing.info.run_id)} >= {"robustness_feature_missing.png"}
    present = runs["modality_missing"].data.metrics
    expected = {
        f"Non0_Acc2_present_{c}" for c in ("text", "audio", "vision", "text_audio", "text_vision", "audio_vision")
    }
    assert expected <= set(present)
    (row,) = [r for r in collect(uri, "mosi") if r["run_id"] == study.info.run_id]
    assert row["robustness"] == f"Non0_Acc2 {area:.4f}"
    assert f"Non0_Acc2 {area:.4f}" in render([row], "md")


def test_posts_lose_their_image_or_their_text_and_keep_the_image_otherwise():
    """An image+text post has two modalities: its text, and its image (pixels and the features computed from
    them, zeroed together); the token and noise protocols change its text only."""
    rng = np.random.default_rng(0)
    n = 12
    ids = np.array([f"p{i}" for i in range(n)])
    posts = Split(
        ids=ids,
        video_ids=ids,
        labels=rng.integers(0, 3, n),
        raw_text=np.array(["what a wonderful sunny morning at the beach"] * n),
        vision=rng.normal(size=(n, 4, 8)).astype(np.float32),
        vision_lengths=np.full(n, 4),
        image=rng.integers(1, 255, (n, 3, 8, 8)).astype(np.uint8),
    )
    clean_ids, _ = tokenize(posts.raw_text)
    no_image = perturb(posts, Condition("modality_missing", present=("text",)), FROZEN, {})
    assert (no_image.image == 0).all() and (no_image.vision == 0).all()
    assert np.array_equal(no_image.text_ids, clean_ids)
    no_text = perturb(posts, Condition("modality_missing", present=("image",)), FROZEN, {})
    assert np.array_equal(no_text.image, posts.image) and np.array_equal(no_text.vision, posts.vision)
    assert (no_text.text_lengths == 2).all()
    for condition in (Condition("feature_missing", 0.7), Condition("noise", 0.7)):
        out = perturb(posts, condition, FROZEN, {"vision": np.ones(8, np.float32)})
        assert np.array_equal(out.image, posts.image) and np.array_equal(out.vision, posts.vision)
        assert not np.array_equal(out.text_ids, clean_ids)
