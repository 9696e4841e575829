"""The multi-task sequential model as its paper describes it: each cross-attention direction
with its own FFN (Eq. 4-5), the text cut to its first tokens, the Table 5 ablations (each
removes exactly its part), the shared-feature weights per epoch and per sample (Fig. 7), and
the auxiliary tasks scored on validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ray_msa.config import ConfigError, TextConfig, TrainConfig
from ray_msa.data.synthetic import make_synthetic
from ray_msa.models import build_model, get_spec
from ray_msa.models.layers import AttentionBlock, FeedForwardBlock
from ray_msa.models.mtl import CrossModalBlock, MTLConfig
from ray_msa.search_space import load_space, trial_config
from ray_msa.train.batches import batches, in_order
from ray_msa.train.engine import make_engine
from ray_msa.train.loop import WorkerContext, run_cross_validation, train_epoch

HP = dict(heads=2, ffn=32, dropout=0.1, hidden=16)
SPEC = get_spec("mtl")


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(sizes=(12, 4, 4))


def batch_of(ds, n: int = 6) -> dict[str, torch.Tensor]:
    return next(batches(ds.splits["train"], in_order(np.arange(n), n)))


def build(ds, **settings):
    torch.manual_seed(0)
    return build_model("mtl", ds.modalities, ds.feature_dims(), {**HP, **settings})


def modules_of(model: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


def trained_step(model, batch) -> tuple[torch.Tensor, dict[str, float]]:
    output = model(batch)
    loss, parts = model.loss(output, batch)
    loss.backward()
    return output, parts


# Eq. 4-5: each direction has its own feed-forward layer and LayerNorm


def test_each_cross_attention_direction_has_its_own_ffn_and_layernorm(ds):
    model = build(ds)
    for block in model.cross.values():
        ffns = [block.x_to_y_ffn, block.y_to_x_ffn, block.joint_ffn]
        assert all(isinstance(f, FeedForwardBlock) and isinstance(f.norm, nn.LayerNorm) for f in ffns)
        assert len({id(f) for f in ffns}) == 3 and len(modules_of(block, FeedForwardBlock)) == 3


def test_each_direction_feeds_its_own_ffn(ds):
    """The direction's attention output is exactly what its FFN reads, and the FFN's output is pooled."""
    model = build(ds).eval()
    block = model.cross["text_audio"]
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        block.x_to_y.register_forward_hook(lambda m, i, o: seen.__setitem__("x_to_y", o)),
        block.x_to_y_ffn.register_forward_hook(lambda m, i, o: seen.__setitem__("x_to_y_ffn_in", i[0])),
        block.y_to_x.register_forward_hook(lambda m, i, o: seen.__setitem__("y_to_x", o)),
        block.y_to_x_ffn.register_forward_hook(lambda m, i, o: seen.__setitem__("y_to_x_ffn_in", i[0])),
    ]
    model(batch_of(ds))
    for hook in hooks:
        hook.remove()
    assert torch.equal(seen["x_to_y"], seen["x_to_y_ffn_in"]) and torch.equal(seen["y_to_x"], seen["y_to_x_ffn_in"])
    torch.manual_seed(0)
    x, y = torch.randn(2, 5, 32), torch.randn(2, 4, 32)
    x_pad, y_pad = torch.zeros(2, 5, dtype=torch.bool), torch.zeros(2, 4, dtype=torch.bool)
    before = block(x, x_pad, y, y_pad)
    with torch.no_grad():
        block.x_to_y_ffn.net[-1].bias[0] += 1.0  # only the X->Y FFN changes (one unit: LayerNorm removes a shift)
    assert not torch.allclose(before, block(x, x_pad, y, y_pad))


# the tasks: a task that is off has no head, no loss term, no extras, no metric


def test_the_full_model_trains_three_tasks_and_every_head_gets_a_gradient(ds):
    model = build(ds)
    _, parts = trained_step(model, batch_of(ds))
    assert set(parts) == {"loss_score", "loss_polarity", "loss_intensity"}
    for task in ("score", "polarity", "intensity"):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.heads[task].parameters()), task


@pytest.mark.parametrize(
    ("off", "kept"),
    [
        ({"polarity_task": False}, ("score", "intensity")),
        ({"intensity_task": False}, ("score", "polarity")),
        ({"polarity_task": False, "intensity_task": False}, ("score",)),
    ],
    ids=["no_polarity", "no_intensity", "no_aux_tasks"],
)
def test_a_task_that_is_off_has_no_head_no_loss_term_and_no_gradient(ds, off, kept):
    model = build(ds, **off)
    batch = batch_of(ds)
    output, parts = trained_step(model, batch)
    assert tuple(model.heads) == kept and model.tasks == kept
    assert set(parts) == {f"loss_{t}" for t in kept}
    assert set(output.extras) == {f"weights_{t}" for t in kept} | (
        {"polarity_logit"} if "polarity" in kept else set()
    ) | ({"intensity"} if "intensity" in kept else set())
    # every parameter left is trained by some term (no dead head), and the loss is the kept tasks' weighted mean
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert not any("polarity" in n for n, _ in model.named_parameters()) or "polarity" in kept
    assert not any("intensity" in n for n, _ in model.named_parameters()) or "intensity" in kept


def test_the_loss_is_the_weighted_mean_of_the_trained_tasks_only(ds):
    model = build(ds, alpha=1.0, beta=3.0, gamma=0.5, polarity_task=False).eval()
    batch = batch_of(ds)
    output = model(batch)
    loss, parts = model.loss(output, batch)
    expected = (1.0 * parts["loss_score"] + 0.5 * parts["loss_intensity"]) / 1.5  # beta plays no part
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)


def test_tasks_with_no_weight_are_refused():
    with pytest.raises(ConfigError, match="model.alpha: the trained tasks' weights sum to 0"):
        MTLConfig(alpha=0.0, beta=1.0, polarity_task=False, intensity_task=False)
    MTLConfig(alpha=0.0, gamma=1.0, polarity_task=False)  # intensity alone carries a weight


def test_the_paper_weights_are_the_defaults():
    c = MTLConfig()
    assert (c.alpha, c.beta, c.gamma, c.text_length) == (1.0, 1.0, 1.0, None)


# the structural switches: each removes exactly its part


def counts(model) -> dict[str, int]:
    enc, cross = model.encoders, model.cross
    return {
        "conv": len(modules_of(enc, nn.Conv1d)),
        "gru": len(modules_of(enc, nn.GRU)),
        "enc_linear": sum(isinstance(e.linear, nn.Linear) for e in enc.values()),
        "enc_attn": len(modules_of(enc, AttentionBlock)),
        "enc_ffn": len(modules_of(enc, FeedForwardBlock)),
        "cross_blocks": len(cross),
        "cross_attn": len(modules_of(cross, AttentionBlock)),
        "cross_ffn": len(modules_of(cross, FeedForwardBlock)),
        "project": len(model.project),
        "features": len(model.features),
    }


FULL = {
    "conv": 3,
    "gru": 3,
    "enc_linear": 0,
    "enc_attn": 3,
    "enc_ffn": 3,
    "cross_blocks": 3,
    "cross_attn": 9,
    "cross_ffn": 9,
    "project": 3,
    "features": 6,
}
REMOVES = {
    "no_cnn": {"conv": 0},
    "no_bigru": {"gru": 0, "enc_linear": 3},
    "no_unimodal_attention": {"enc_attn": 0, "enc_ffn": 0},
    "no_cross_attention": {"cross_attn": 6, "cross_ffn": 6},
    "no_cross_shared": {"cross_blocks": 0, "cross_attn": 0, "cross_ffn": 0, "features": 3},
    "no_unimodal_shared": {"project": 0, "features": 3},
}


def test_the_full_model_has_every_part(ds):
    assert counts(build(ds)) == FULL


@pytest.mark.parametrize("variant", sorted(REMOVES))
def test_each_structural_switch_removes_exactly_its_part(ds, variant):
    model = build(ds, **SPEC.variants[variant])
    assert counts(model) == {**FULL, **REMOVES[variant]}
    output = model(batch_of(ds))
    assert output.prediction.shape == (6,) and torch.isfinite(output.prediction).all()
    assert output.extras["weights_score"].shape == (6, counts(model)["features"])


def test_no_cnn_reads_the_input_and_no_bigru_keeps_the_width(ds):
    no_cnn = build(ds, cnn=False)
    assert all(e.gru.input_size == ds.feature_dims()[m] for m, e in no_cnn.encoders.items())
    no_bigru = build(ds, bigru=False)
    assert all((e.linear.in_features, e.linear.out_features) == (100, 32) for e in no_bigru.encoders.values())
    both = build(ds, cnn=False, bigru=False)
    assert all(e.linear.in_features == ds.feature_dims()[m] for m, e in both.encoders.items())


def test_shared_feature_names_follow_the_switches(ds):
    assert build(ds).features == ("T", "A", "V", "TA", "TV", "AV")
    assert build(ds, cross_shared=False).features == ("T", "A", "V")
    assert build(ds, unimodal_shared=False).features == ("TA", "TV", "AV")


def test_no_shared_feature_at_all_is_refused():
    with pytest.raises(ConfigError, match="model.cross_shared: .*both off.*Fix: turn one of them on"):
        MTLConfig(unimodal_shared=False, cross_shared=False)
    text_only = make_synthetic(sizes=(8, 4, 4), shapes={"text": (10, 16)})
    with pytest.raises(ConfigError, match="model.unimodal_shared: .*no cross-modal"):
        build(text_only, unimodal_shared=False)


@pytest.mark.parametrize("variant", ["no_cnn", "no_bigru", "no_unimodal_attention", "no_cross_attention"])
def test_padding_values_never_change_the_outputs_of_a_variant(ds, variant):
    model = build(ds, **SPEC.variants[variant]).eval()
    b = batch_of(ds)
    noisy = dict(b)
    for m in ("text", "audio", "vision"):
        pad = torch.arange(b[m].size(1))[None, :] >= b[f"{m}_lengths"][:, None]
        noisy[m] = torch.where(pad.unsqueeze(-1), 100 * torch.randn_like(b[m]), b[m])
    torch.testing.assert_close(model(b).prediction, model(noisy).prediction, rtol=1e-4, atol=1e-4)


# every declared variant


def test_the_spec_declares_the_paper_ablations():
    assert set(SPEC.variants) == {
        "no_polarity",
        "no_intensity",
        "no_aux_tasks",
        "no_cross_shared",
        "no_unimodal_shared",
        "no_cnn",
        "no_bigru",
        "no_unimodal_attention",
        "no_cross_attention",
    }


@pytest.mark.parametrize("variant", sorted(SPEC.variants))
def test_every_variant_builds_from_the_paper_start_and_trains_one_step(ds, variant):
    space = load_space("mtl")
    trial = space.build(space.start_for()).with_model(**SPEC.variants[variant], hidden=16, ffn=32)
    model = SPEC.build(ds.modalities, ds.feature_dims(), trial.model)
    engine = make_engine(model, TrainConfig(lr=1e-3), torch.device("cpu"))
    batch = batch_of(ds)
    before = [p.detach().clone() for p in model.parameters()]
    output = engine.forward(batch)
    loss, _ = model.loss(output, batch)
    engine.backward(loss)
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)  # nothing built is left untrained
    engine.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))


# text_length: the model reads only the first N text positions


def test_text_length_reads_only_the_first_positions_of_features(ds):
    cut_model = build(ds, text_length=5).eval()
    full_model = build(ds).eval()
    full_model.load_state_dict(cut_model.state_dict())
    b = batch_of(ds)
    assert int(b["text_lengths"].max()) > 5
    cut = {**b, "text": b["text"][:, :5], "text_lengths": b["text_lengths"].clamp(max=5)}
    out, expected = cut_model(b), full_model(cut)
    torch.testing.assert_close(out.prediction, expected.prediction, rtol=0, atol=1e-6)
    for key in out.extras:
        torch.testing.assert_close(out.extras[key], expected.extras[key], rtol=0, atol=1e-6)
    assert not torch.allclose(out.prediction, full_model(b).prediction, atol=1e-4)  # the cut matters here


def test_text_length_cuts_the_token_ids_of_a_finetuned_lm():
    from ray_msa.data.text import prepare_text

    tokens = prepare_text(make_synthetic(sizes=(8, 4, 4), shapes={"text": (10, 16), "audio": (5, 8)}), "finetune")
    text = TextConfig(mode="finetune")
    torch.manual_seed(0)
    cut_model = build_model("mtl", tokens.modalities, tokens.feature_dims(), {**HP, "text_length": 3}, text).eval()
    full_model = build_model("mtl", tokens.modalities, tokens.feature_dims(), HP, text).eval()
    full_model.load_state_dict(cut_model.state_dict())
    b = next(batches(tokens.splits["train"], in_order(np.arange(4), 4)))
    assert int(b["text_lengths"].max()) > 3
    cut = {
        **b,
        "text_ids": b["text_ids"][:, :3],
        "text_mask": b["text_mask"][:, :3],
        "text_lengths": b["text_lengths"].clamp(max=3),
    }
    torch.testing.assert_close(cut_model(b).prediction, full_model(cut).prediction, rtol=0, atol=1e-6)
    assert not torch.allclose(cut_model(b).prediction, full_model(b).prediction, atol=1e-4)


def test_text_length_must_be_positive():
    with pytest.raises(ConfigError, match="model.text_length: 0 is below 1"):
        MTLConfig(text_length=0)


# the shared-feature weights: per epoch (after_backward) and per sample (fold_plots)


@pytest.mark.parametrize("variant", [None, "no_polarity", "no_unimodal_shared"])
def test_after_backward_logs_each_tasks_mean_weights_summing_to_one(ds, variant):
    model = build(ds, **(SPEC.variants[variant] if variant else {}))
    batch = batch_of(ds)
    output, _ = trained_step(model, batch)
    logged = model.after_backward(output, batch)
    expected = {f"sfw_{t}_{f}" for t in model.tasks for f in model.features}
    assert set(logged) == expected and all(isinstance(v, float) for v in logged.values())
    for task in model.tasks:
        total = sum(v for k, v in logged.items() if k.startswith(f"sfw_{task}_"))
        assert total == pytest.approx(1.0, abs=1e-5)
        mean = output.extras[f"weights_{task}"].detach().mean(0)
        assert logged[f"sfw_{task}_{model.features[0]}"] == pytest.approx(float(mean[0]), abs=1e-6)
    assert model.plot_prefixes == ("sfw_score_", "sfw_polarity_", "sfw_intensity_")


def test_the_loop_logs_the_weights_per_epoch(ds):
    model = build(ds, intensity_task=False)
    engine = make_engine(model, TrainConfig(lr=1e-3), torch.device("cpu"))
    split = ds.splits["train"]
    fit = train_epoch(engine, split, np.arange(len(split)), 6, [0, 0, 0], WorkerContext())
    assert {f"train_sfw_{t}_{f}" for t in ("score", "polarity") for f in model.features} <= set(fit)
    assert not any(k.startswith("train_sfw_intensity") for k in fit) and "train_loss_intensity" not in fit


def test_fold_plots_draw_one_box_plot_per_trained_task_with_a_series_per_feature(ds):
    model = build(ds, polarity_task=False).eval()
    extras = {k: v.detach().numpy() for k, v in model(batch_of(ds)).extras.items()}
    plots = model.fold_plots(extras)
    assert set(plots) == {"shared_feature_weights_score.png", "shared_feature_weights_intensity.png"}
    for task in ("score", "intensity"):
        series = plots[f"shared_feature_weights_{task}.png"]
        assert list(series) == ["T", "A", "V", "TA", "TV", "AV"]
        np.testing.assert_array_equal(series["TV"], extras[f"weights_{task}"][:, 4])


# the auxiliary tasks scored on validation


def test_validation_metrics_score_polarity_and_intensity_on_their_own_targets(ds):
    labels = np.array([-2.0, -0.5, 0.0, 1.0, 2.5], np.float32)
    extras = {
        "polarity_logit": np.array([-1.0, 0.3, 0.2, -0.1, 4.0], np.float32),  # right, wrong, right, wrong, right
        "intensity": np.array([1.5, 0.5, 1.0, 1.0, 2.0], np.float32),  # errors 0.5, 0, 1, 0, 0.5
    }
    metrics = build(ds).validation_metrics(extras, labels)
    assert metrics == pytest.approx({"Polarity_Acc": 3 / 5, "Intensity_MAE": 2.0 / 5})
    assert build(ds, polarity_task=False).validation_metrics({"intensity": extras["intensity"]}, labels) == (
        pytest.approx({"Intensity_MAE": 0.4})
    )
    assert build(ds, **SPEC.variants["no_aux_tasks"]).validation_metrics({}, labels) == {}


class RecordingTracker:
    """Stands in for MLflow: what the loop logs for each fold run."""

    def __init__(self) -> None:
        self.logged: list[dict[str, float]] = []
        self.boxes: dict[str, dict[str, np.ndarray]] = {}
        self.prefixes: tuple[str, ...] = ()

    def child(self, parent, name, tags):
        return name

    def params(self, run_id, values):
        pass

    def metrics(self, run_id, values, step=None):
        self.logged.append(dict(values))

    def plot_history(self, run_id, history, prefixes):
        self.prefixes = prefixes

    def box_plot(self, run_id, name, series):
        self.boxes[f"{run_id}/{name}"] = series

    def finish(self, run_id):
        pass


def test_a_cross_validation_logs_the_auxiliary_metrics_and_the_box_plots():
    data = make_synthetic(sizes=(48, 8, 8), seed=2)
    settings = {**HP, "folds": 2, "max_epochs": 1, "batch_size": 16, "metric": "MAE", "intensity_task": False}
    tracker = RecordingTracker()
    run_cross_validation(trial_config("mtl", settings), data, lambda m, s: None, WorkerContext(), tracker=tracker)
    epoch_rows = [row for row in tracker.logged if "val_MAE" in row]
    assert epoch_rows and all("val_Polarity_Acc" in r and "val_Intensity_MAE" not in r for r in epoch_rows)
    assert all(0.0 <= r["val_Polarity_Acc"] <= 1.0 and "train_sfw_polarity_AV" in r for r in epoch_rows)
    names = {f"fold-{i}/shared_feature_weights_{t}.png" for i in (0, 1) for t in ("score", "polarity")}
    assert set(tracker.boxes) == names
    assert tracker.prefixes == ("sfw_score_", "sfw_polarity_", "sfw_intensity_")


def test_the_space_starts_at_the_paper_setting():
    space = load_space("mtl")
    start = space.start_for()
    trial = space.build(start)
    assert (trial.model.alpha, trial.model.beta, trial.model.gamma) == (1.0, 1.0, 1.0)
    assert (trial.train.lr, trial.train.batch_size) == (5e-4, 128)
    for name, value in start.items():  # every start value lies inside its sampled range or among its choices
        kind, args = next(iter(space.space[name].items()))
        assert value in args if kind == "choice" else args[0] <= value <= args[1], name


def test_crossmodal_block_without_joint_attention_pools_the_directions():
    torch.manual_seed(0)
    block = CrossModalBlock(8, 2, 16, 0.0, joint=False).eval()
    x, y = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    x_pad = torch.tensor([[False, False, True], [False, False, False]])
    y_pad = torch.zeros(2, 4, dtype=torch.bool)
    x_y = block.x_to_y_ffn(block.x_to_y(x, y, y_pad))
    y_x = block.y_to_x_ffn(block.y_to_x(y, x, x_pad))
    both, keep = torch.cat([x_y, y_x], 1), ~torch.cat([x_pad, y_pad], 1)
    expected = (both * keep.unsqueeze(-1)).sum(1) / keep.sum(1, keepdim=True)
    torch.testing.assert_close(block(x, x_pad, y, y_pad), expected)
