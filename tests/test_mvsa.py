"""Image + text posts: the reader (encodings, cleaning, nothing silently dropped), the
pretrained EfficientNet-Lite0, the classifier's encoders, fusions and focal loss, and the
study -> predict path on a small copy of the real MVSA folder."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import new_store, tune_command

from ray_msa.data import mvsa
from ray_msa.data.mvsa import TAGS, clean, load_mvsa_dataset, read_posts
from ray_msa.errors import InputError
from ray_msa.models.image_text import (
    MASK_ID,
    TEXT_TOP_LAYERS,
    ImageTextClassifier,
    ImageTextConfig,
    run_lm_layers,
    sigmoid_focal_loss,
)

ROOT = Path(__file__).resolve().parents[1]


SAMPLE = ROOT / "tests" / "data" / "mvsa_sample"  # committed: 60 real posts, see its ATTRIBUTION.md


@pytest.fixture(scope="module")
def small_mvsa(tmp_path_factory) -> Path:
    """48 labelled posts (16 per tag), 4 more with GB18030 texts and 8 unlabelled ones, in a folder
    a test may change."""
    out = tmp_path_factory.mktemp("mvsa") / "mvsa_sample"
    shutil.copytree(SAMPLE, out, ignore=shutil.ignore_patterns("*.md"))
    return out


def _write(path: Path, rows: list[tuple[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["guid", "tag"])
        writer.writerows(rows)


def test_cleaning_keeps_hashtag_words_and_drops_urls_mentions_retweets():
    assert clean("RT @someone: Great day!! #sunny #beach http://t.co/x1 www.a.b") == "Great day!! sunny beach"
    assert clean("@a @b_c loved it #love") == "loved it love"


def test_reader_decodes_every_encoding_and_counts_fallbacks(small_mvsa):
    posts = read_posts(small_mvsa, "train.txt", labelled=True)
    assert len(posts.guids) == 52 and posts.encodings["gb18030"] >= 4 and sum(posts.encodings.values()) == 52
    assert set(posts.labels.tolist()) == {0, 1, 2}
    assert [g for g, t in zip(posts.guids, posts.texts) if not t] == posts.image_only  # link-only texts, listed
    unlabelled = read_posts(small_mvsa, "test_without_label.txt", labelled=False)
    assert len(unlabelled.guids) == 8 and (unlabelled.labels == -1).all()


def test_reader_names_the_guids_it_cannot_use(small_mvsa, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(small_mvsa, broken)
    guids = [r["guid"] for r in csv.DictReader((broken / "train.txt").open())]
    (broken / "data" / f"{guids[0]}.jpg").unlink()
    with pytest.raises(InputError, match=f"no image: 1 posts: {guids[0]}"):
        read_posts(broken, "train.txt", labelled=True)
    shutil.copy(small_mvsa / "data" / f"{guids[0]}.jpg", broken / "data")
    (broken / "data" / f"{guids[1]}.txt").write_bytes(
        b"RT @x: http://t.co/a "
    )  # only a link: kept, as image only, and listed
    assert guids[1] in read_posts(broken, "train.txt", labelled=True).image_only
    (broken / "data" / f"{guids[1]}.txt").write_bytes(b" \r\n")
    with pytest.raises(InputError, match=f"empty text file: 1 posts: {guids[1]}"):
        read_posts(broken, "train.txt", labelled=True)
    (broken / "train.txt").write_text(f"guid,tag\n{guids[2]},happy\n")
    with pytest.raises(InputError, match=f"unknown tag for 1 guids: {guids[2]}"):
        read_posts(broken, "train.txt", labelled=True)


def test_a_text_neither_utf8_nor_gb18030_is_read_as_latin1(small_mvsa, tmp_path):
    folder = tmp_path / "latin1"
    shutil.copytree(small_mvsa, folder)
    guid = next(csv.DictReader((folder / "train.txt").open()))["guid"]
    (folder / "data" / f"{guid}.txt").write_bytes(b"na\xefve caf\xe9 \xff! #lovely")  # 0xff: no GB18030 byte
    posts = read_posts(folder, "train.txt", labelled=True)
    assert posts.texts[list(posts.guids).index(guid)] == "naïve café ÿ! lovely"
    assert posts.encodings["latin-1"] == 1


@pytest.mark.parametrize(
    "lines, match",
    [
        (["guid,tag", "{a},positive", "{a},negative"], "guid: {a} listed twice \\(line 3\\)"),
        (["id,label", "{a},positive"], "header: \\['id', 'label'\\]"),
        (["guid,tag", "{a},happy"], "unknown tag for 1 guids: {a}"),
    ],
)
def test_a_broken_train_list_is_refused_naming_the_guid(small_mvsa, tmp_path, lines, match):
    folder = tmp_path / "broken"
    shutil.copytree(small_mvsa, folder)
    a = next(csv.DictReader((folder / "train.txt").open()))["guid"]
    (folder / "train.txt").write_text("\n".join(line.format(a=a) for line in lines) + "\n")
    with pytest.raises(InputError, match=match.format(a=a)):
        read_posts(folder, "train.txt", labelled=True)


def test_a_post_in_both_lists_is_refused_before_any_image_is_read(small_mvsa, tmp_path, monkeypatch):
    folder = tmp_path / "both"
    shutil.copytree(small_mvsa, folder)
    train = list(csv.reader((folder / "train.txt").open()))[1:]
    test = list(csv.reader((folder / "test_without_label.txt").open()))[1:]
    _write(folder / "test_without_label.txt", [*test, (train[3][0], "null")])
    monkeypatch.setattr(mvsa, "load_images", lambda *a: pytest.fail("images read before the lists were checked"))
    with pytest.raises(InputError, match=f"guid: 1 posts also in train.txt: {train[3][0]}"):
        load_mvsa_dataset(folder)


def test_a_corrupt_jpeg_is_named_by_guid(small_mvsa, tmp_path):
    folder = tmp_path / "corrupt"
    shutil.copytree(small_mvsa, folder)
    guid = list(csv.reader((folder / "train.txt").open()))[5][0]
    jpeg = folder / "data" / f"{guid}.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:200])  # a JPEG cut short: the header parses, the pixels do not
    with pytest.raises(InputError, match=f"images: 1 unreadable: guids {guid}"):
        load_mvsa_dataset(folder)


def test_efficientnet_lite0_loads_every_weight():
    from ray_msa.pretrained.efficientnet_lite import EfficientNetLite0, weights_path

    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    result = EfficientNetLite0().load_state_dict(state, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == []
    from ray_msa.pretrained.efficientnet_lite import pretrained_efficientnet_lite0

    with torch.no_grad():
        assert pretrained_efficientnet_lite0().eval()(torch.zeros(1, 3, 224, 224)).shape == (1, 1280, 7, 7)


def classifier(**settings) -> ImageTextClassifier:
    """The classifier on pretrained-feature shapes (MiniLM 384, EfficientNet-Lite0 1280)."""
    return ImageTextClassifier(("text", "vision"), {"text": 384, "vision": 1280}, ImageTextConfig(**settings))


def batch(n: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "vision": torch.randn(n, 49, 1280, generator=g),
        "vision_lengths": torch.full((n,), 49),
        "text": torch.randn(n, 12, 384, generator=g),
        "text_lengths": torch.tensor([12, 5, 8, 3][:n]),
        "text_ids": torch.randint(1, 1000, (n, 12), generator=g),
        "text_mask": torch.ones(n, 12, dtype=torch.long),
        "image": torch.randint(0, 255, (n, 3, 64, 64), generator=g, dtype=torch.uint8),
        "labels": torch.tensor([0, 1, 2, 1][:n]),
    }


@pytest.mark.parametrize("encoder", ["pretrained", "scratch"])
@pytest.mark.parametrize("fusion", ["concat", "cross", "bicross"])
def test_every_encoder_and_fusion_trains(encoder, fusion):
    model = classifier(
        encoder=encoder,
        fusion=fusion,
        dim=32,
        heads=4,
        ffn=64,
        layers=2,
    )
    out = model(batch())
    assert out.prediction.shape == (4, 3)
    loss, _ = model.loss(out, batch())
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)  # every module is used


def test_the_models_top_lm_layers_reproduce_the_frozen_lm(tmp_path, monkeypatch):
    """States entering the top layers, run through the model's copies, equal the LM's last layer."""
    from ray_msa.data.text import embed_frozen, tokenize

    monkeypatch.setenv("RAY_MSA_CACHE", str(tmp_path))
    ids, mask = tokenize(np.array(["what a lovely sunny day", "so sad and tired tonight, nothing works", "ok"]))
    last, below = embed_frozen(ids, mask), embed_frozen(ids, mask, skip_top=TEXT_TOP_LAYERS)
    assert not np.allclose(last, below)
    model = classifier(use="text", dim=32, heads=4, ffn=64).eval()
    lengths = torch.from_numpy(mask.sum(1))
    states = torch.from_numpy(below)
    pad = torch.arange(states.size(1))[None, :] >= lengths[:, None]
    with torch.no_grad():
        states = run_lm_layers(model.lm_top, states, pad)
    real = torch.from_numpy(mask).bool()
    assert torch.allclose(states[real], torch.from_numpy(last)[real], atol=1e-4)


def test_text_tune_trains_only_the_top_layers_at_their_own_rate():
    model = classifier(dim=32, heads=4, ffn=64, text_tune=1, text_lr=3e-5)
    model.train()
    frozen, tuned = model.lm_top[:-1], model.lm_top[-1]
    assert len(frozen) == TEXT_TOP_LAYERS - 1
    assert not any(layer.training for layer in frozen) and tuned.training  # frozen layers keep no dropout
    model.loss(model(batch()), batch())[0].backward()
    assert all(p.grad is None for p in frozen.parameters())
    assert all(p.grad is not None for p in tuned.parameters())
    groups = model.parameter_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 3e-5]
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in model.parameters())
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in tuned.parameters()}


def test_text_padding_is_ignored():
    model = classifier(fusion="bicross", dim=32, heads=4, ffn=64).eval()
    b = batch()
    changed = {**b, "text": b["text"].clone()}
    changed["text"][1, 5:] = 100.0  # beyond sample 1's 5 real tokens
    assert torch.allclose(model(b).prediction, model(changed).prediction, atol=1e-5)


def test_scratch_word_dropout_hides_words_only_while_training():
    model = classifier(
        encoder="scratch",
        use="text",
        dim=32,
        heads=4,
        ffn=64,
        dropout=0.0,
        word_dropout=0.5,
    )
    seen = []
    model.embed.register_forward_hook(lambda module, args, out: seen.append(args[0].clone()))
    b = batch()
    model.train()(b)
    hidden = seen[-1] == MASK_ID
    assert 0 < hidden.float().mean() < 1 and torch.equal(seen[-1][~hidden], b["text_ids"][~hidden])
    model.eval()
    assert torch.allclose(model(b).prediction, model(b).prediction) and torch.equal(seen[-1], b["text_ids"])
    assert model.embed.weight.std() < 0.05 and not model.embed.weight[0].any()  # BERT-style init, zero padding row


@pytest.mark.parametrize("use", ["image", "text"])
def test_ablation_variants_use_one_modality(use):
    model = classifier(use=use, dim=32, heads=4, ffn=64)
    b = batch()
    other = {**b, ("text" if use == "image" else "vision"): torch.zeros_like(b["text" if use == "image" else "vision"])}
    model.eval()
    assert torch.allclose(model(b).prediction, model(other).prediction)


def test_focal_loss_reduces_to_binary_cross_entropy_and_down_weights_easy_samples():
    logits, target = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 4.0, 0.0]]), torch.tensor([0, 1])
    bce = (
        torch.nn.functional.binary_cross_entropy_with_logits(
            logits, torch.nn.functional.one_hot(target, 3).float(), reduction="none"
        )
        .sum(-1)
        .mean()
    )
    assert torch.isclose(sigmoid_focal_loss(logits, target, alpha=-1, gamma=0.0), bce)
    easy, hard = torch.tensor([[6.0, -6.0, -6.0]]), torch.tensor([[0.0, 0.0, 0.0]])
    ratio_focal = sigmoid_focal_loss(easy, torch.tensor([0]), 0.25, 2.0) / sigmoid_focal_loss(
        hard, torch.tensor([0]), 0.25, 2.0
    )
    ratio_bce = sigmoid_focal_loss(easy, torch.tensor([0]), -1, 0.0) / sigmoid_focal_loss(
        hard, torch.tensor([0]), -1, 0.0
    )
    assert ratio_focal < ratio_bce / 100


def test_mvsa_dataset_is_stratified_and_cached(small_mvsa, tmp_path):
    from ray_msa.data.folds import development_pool, group_folds
    from ray_msa.data.sources import load_dataset

    ds = load_dataset("mvsa", small_mvsa, cache_root=tmp_path)
    train, test = ds.splits["train"], ds.splits["test"]
    assert ds.task == "classes" and ds.class_names == TAGS and len(ds.splits["valid"]) == 0
    assert train.vision.shape == (52, 49, 1280) and train.image.shape == (52, 3, 64, 64) and (test.labels == -1).all()
    assert any("gb18030" in k for k in ds.notes)
    pool = development_pool(ds)
    for _, val in group_folds(pool.video_ids, 4, 0, pool.labels):
        assert np.bincount(pool.labels[val], minlength=3).min() >= 3  # every fold keeps every class
    assert load_dataset("mvsa", small_mvsa, cache_root=tmp_path).fingerprint() == ds.fingerprint()


@pytest.mark.slow
def test_tune_then_predict_the_unlabelled_posts(small_mvsa, tmp_path, ray_cluster):
    args = ("--data", str(small_mvsa), "--trials", "1", "--folds", "2", "--epochs", "1", "--test-seeds", "1")
    done = tune_command("mvsa", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "F1_weighted" in done.stdout and "image_text on mvsa" in done.stdout
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    study_run = done.stdout.split("MLflow: study run ")[1].split()[0]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    folds = client.search_runs([client.get_run(study_run).info.experiment_id], "tags.role = 'fold'")
    assert len(folds) == 2 and all(
        "confusion_matrix.png" in [a.path for a in client.list_artifacts(f.info.run_id)] for f in folds
    )

    from ray_msa.predict import main as predict

    out = tmp_path / "predictions.csv"
    assert predict(["--model", study_run, "--data", str(small_mvsa), "--out", str(out), "--tracking-uri", uri]) == 0
    table = pd.read_csv(out, dtype={"id": str})
    expected = [r["guid"] for r in csv.DictReader((small_mvsa / "test_without_label.txt").open())]
    assert list(table["id"]) == expected and set(table["tag"]) <= set(TAGS)
    probabilities = table[[f"p_{t}" for t in TAGS]].to_numpy()
    assert np.allclose(probabilities.sum(1), 1, atol=1e-6)
    assert list(table["tag"]) == [TAGS[k] for k in probabilities.argmax(1)]
    model_uri = done.stdout.split("; model ")[1].split()[0]  # models:/m-...
    for spelled in (f"runs:/{study_run}", model_uri):  # every way a user may name the same model
        again = tmp_path / "again.csv"
        assert predict(["--model", spelled, "--data", str(small_mvsa), "--out", str(again), "--tracking-uri", uri]) == 0
        assert again.read_text() == out.read_text()
    # the pyfunc reads a post as the text and the JPEG's bytes, and predicts what predict does
    import mlflow

    from ray_msa.data.mvsa import decode

    posts = pd.DataFrame(
        {
            "id": expected,
            "text": [decode((small_mvsa / "data" / f"{g}.txt").read_bytes())[0] for g in expected],
            "image": [(small_mvsa / "data" / f"{g}.jpg").read_bytes() for g in expected],
        }
    )
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(model_uri).predict(posts)
    assert list(served["tag"]) == list(table["tag"])
    assert np.abs(served[[f"p_{t}" for t in TAGS]].to_numpy() - probabilities).max() < 1e-6


def test_predict_refuses_data_of_another_dataset(small_mvsa, tmp_path, capsys):
    """A model trained on MOSI reads MOSI's formats only: an MVSA folder is refused in one line."""
    import mlflow

    from ray_msa.config import TextConfig
    from ray_msa.data.sources import load_dataset
    from ray_msa.predict import main as predict
    from ray_msa.search_space import load_space
    from ray_msa.serving.pyfunc import log_pyfunc
    from ray_msa.serving.stored import write_model_files
    from ray_msa.study import model_record

    space = load_space("lf_dnn")
    trial = space.build(space.start_for(), {"metric": "MAE"}, TextConfig())
    mosi = trial.spec.prepare_text(load_dataset("mosi", ROOT / "tests" / "data" / "mosi_sample"), trial.text)
    record = model_record(mosi, trial) | {"members": 0}
    uri = new_store(tmp_path / "mlflow.db")
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run() as run:
        write_model_files(tmp_path / "model", trial.spec.for_dataset(mosi, trial.model, trial.text), record)
        log_pyfunc(tmp_path / "model", record)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        predict(
            [
                "--model",
                run.info.run_id,
                "--data",
                str(small_mvsa),
                "--out",
                str(tmp_path / "p.csv"),
                "--tracking-uri",
                uri,
            ]
        )
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "no mosi data found" in err
    assert not (tmp_path / "p.csv").exists()


def test_space_starts_at_the_paper_then_once_per_encoder_with_every_hyperparameter(tmp_path):
    from ray_msa.errors import InputError
    from ray_msa.search_space import load_space

    space = load_space("image_text")
    assert [s["encoder"] for s in space.start] == ["pretrained", "pretrained", "scratch"]
    paper = {"fusion": "bicross", "heads": 8, "ffn": 1024, "dim": 512, "layers": 3, "dropout": 0.3, "lr": 1.0e-4}
    assert paper.items() <= space.start_for().items()  # paper 004's setting is the first trial
    assert all(set(s) == set(space.space) for s in space.start)  # complete points: Optuna samples nothing for them
    assert space.start_for(encoder="scratch")["lr"] == 1.0e-3
    single = tmp_path / "one.yaml"
    single.write_text("space: {lr: {loguniform: [1.0e-4, 1.0e-3]}}\nstart: {lr: 5.0e-4}\n")
    assert load_space("image_text", single).start == [{"lr": 5.0e-4}]
    single.write_text("start: [5.0e-4]\n")
    with pytest.raises(InputError, match="one.yaml.*start"):
        load_space("image_text", single)
    single.write_text("train: {lr_schedule: step}\nspace: {}\n")
    with pytest.raises(InputError, match="one.yaml.*train.lr_schedule.*linear"):
        load_space("image_text", single)


def test_results_table_says_an_unlabelled_test_split_has_no_labels():
    from ray_msa.study import StudyResult, results_table

    cv = {"mean_Acc": 0.7368, "std_Acc": 0.0062, "mean_F1_weighted": 0.723, "std_F1_weighted": 0.0084}
    unlabelled = results_table(StudyResult("run", {}, cv, {}, 5, 60.0, (1.0, 60.0), ""), ("Acc", "F1_weighted"))
    assert "nan" not in unlabelled and "0.7368 ± 0.0062        -" in unlabelled and "no labels" in unlabelled
    labelled = results_table(
        StudyResult("run", {}, cv, {"Acc": 0.71, "F1_weighted": 0.7}, 5, 60.0, (1.0, 60.0), ""), ("Acc", "F1_weighted")
    )
    assert "0.7100" in labelled and "no labels" not in labelled


def test_ablate_uses_the_text_model_the_study_was_tuned_with(small_mvsa, tmp_path, monkeypatch, capsys, ray_cluster):
    """A study tuned with --text-model X records X in its resolved configuration; ablate reads it back, loads X
    for every tokenizer and encoder, never the bundled MiniLM, and prints image+text, image and text."""
    import mlflow
    import transformers

    from ray_msa.ablate import main as ablate
    from ray_msa.config import TextConfig
    from ray_msa.pretrained.lm import resolve_lm
    from ray_msa.search_space import load_space

    other = tmp_path / "other-lm"  # a local Hugging Face folder: a text model of another name
    shutil.copytree(resolve_lm("minilm"), other)
    space = load_space("image_text")
    trial = space.build(
        space.start_for(encoder="pretrained", fusion="concat"), {"metric": "Acc"}, TextConfig(model=str(other))
    )
    uri = new_store(tmp_path / "mlflow.db")
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("ray_msa-mvsa")
    with mlflow.start_run(tags={"role": "study"}) as study:
        mlflow.log_dict(
            {"arch": "image_text", "dataset": "mvsa", "task": "classes", "config": trial.to_dict()}, "model_spec.json"
        )
    loaded = []
    for auto in (transformers.AutoModel, transformers.AutoTokenizer):
        original = auto.from_pretrained

        def spy(name, *args, _original=original, **kwargs):
            loaded.append(str(name))
            return _original(name, *args, **kwargs)

        monkeypatch.setattr(auto, "from_pretrained", spy)
    monkeypatch.setenv("RAY_MSA_CACHE", str(tmp_path / "cache"))
    argv = [
        "mvsa",
        "--data",
        str(small_mvsa),
        "--config-run",
        study.info.run_id,
        "--folds",
        "2",
        "--epochs",
        "1",
        "--cpus-per-worker",  # the three variants side by side
        "0.5",
        "--tracking-uri",
        uri,
    ]
    assert ablate(argv) == 0
    out = capsys.readouterr().out
    assert f"configuration from study run {study.info.run_id}" in out and str(other) in out
    rows = [
        line.split()[0]
        for line in out.splitlines()
        if line.split() and line.split()[0] in ("image+text", "image", "text")
    ]
    assert rows == ["image+text", "image", "text"]
    assert len(loaded) >= 2 and set(loaded) == {str(other)}, loaded  # tokenizer, frozen states, the model's layers
