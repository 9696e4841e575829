"""Each paper's mechanism, not only shapes."""

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from ray_msa.config import TrainConfig
from ray_msa.data.synthetic import make_synthetic
from ray_msa.models import build_model
from ray_msa.train.batches import batches, in_order
from ray_msa.train.engine import make_engine, make_schedule
from ray_msa.train.loop import WorkerContext, train_epoch

AWF = dict(dim=16, lstm_hidden=16, att_hidden=8, dropout=0.0, omega_lr=0.05)


def dominated_by_text():
    return make_synthetic(sizes=(160, 20, 20), signal={"text": 3.0, "audio": 0.2, "vision": 0.2}, seed=4)


def test_b_fusion_lowers_the_dominant_modality_weight():
    ds = dominated_by_text()
    split = ds.splits["train"]
    model = build_model("awf", ds.modalities, ds.feature_dims(), AWF)
    engine = make_engine(model, TrainConfig(lr=2e-3), torch.device("cpu"))
    logged = [
        train_epoch(engine, split, np.arange(len(split)), 16, [0, 0, epoch], WorkerContext()) for epoch in range(3)
    ]
    omega = dict(zip(ds.modalities, model.balancer.omega.tolist()))
    assert omega["text"] < 1.0 < min(omega["audio"], omega["vision"]), omega
    assert logged[-1]["train_grad_T"] > logged[-1]["train_grad_A"]  # text had the larger gradients
    assert {"train_omega_T", "train_alpha_T", "train_balance_loss"} <= set(logged[-1])


def test_a_fusion_gets_no_gradient_from_the_balance_loss():
    ds = dominated_by_text()
    model = build_model("awf", ds.modalities, ds.feature_dims(), AWF)
    batch = next(batches(ds.splits["train"], in_order(np.arange(16), 16)))
    output = model(batch)
    model.loss(output, batch)[0].backward()
    before = {n: p.grad.clone() for n, p in model.attention.named_parameters()}
    omega_before = model.balancer.omega.clone()
    model.after_backward(output, batch)
    assert not torch.equal(model.balancer.omega, omega_before)  # omega moved ...
    for name, p in model.attention.named_parameters():  # ... the A-fusion gradients did not
        torch.testing.assert_close(p.grad, before[name], rtol=0, atol=0)
    assert all(not p.requires_grad for p in model.balancer.buffers())


def test_balance_switch_on_late_fusion():
    ds = dominated_by_text()
    plain = build_model("lf_dnn", ds.modalities, ds.feature_dims(), dict(hidden=8, post_fusion=8))
    balanced = build_model("lf_lstm", ds.modalities, ds.feature_dims(), dict(hidden=8, post_fusion=8, balance=True))
    batch = next(batches(ds.splits["train"], in_order(np.arange(16), 16)))
    for model in (plain, balanced):
        out = model(batch)
        model.loss(out, batch)[0].backward()
        logged = model.after_backward(out, batch)
        # the gradient curves are logged either way; omega exists only where B-fusion balances
        assert {"grad_T", "grad_A", "grad_V"} <= set(logged)
        assert ("omega_T" in logged) == (model is balanced)
        expected = model.last["text"].weight.grad.abs().mean().item()
        assert logged["grad_T"] == pytest.approx(expected, rel=1e-6)


def cenet_data():
    from ray_msa.data.text import prepare_text

    return prepare_text(
        make_synthetic(sizes=(24, 8, 8), shapes={"text": (8, 16), "audio": (6, 5), "vision": (4, 7)}, seed=2),
        "finetune",
    )


def test_cenet_vocabulary_sees_training_frames_only(monkeypatch):
    ds = cenet_data()
    split = ds.splits["train"]
    seen = []
    original = KMeans.fit
    monkeypatch.setattr(
        KMeans, "fit", lambda self, X, *a, **k: (seen.append(np.asarray(X).copy()), original(self, X, *a, **k))[1]
    )
    model = build_model("cenet", ds.modalities, ds.feature_dims(), dict(vocab_size=4, ce_layer=2))
    train_idx = np.arange(10)
    model.prepare_from_training_data(split, train_idx)
    assert [len(x) for x in seen] == [
        int(split.audio_lengths[train_idx].sum()),
        int(split.vision_lengths[train_idx].sum()),
    ]
    held_out = split.audio[10:][np.arange(split.audio.shape[1])[None, :] < split.audio_lengths[10:, None]]
    assert not any(
        (np.abs(seen[0][:, None, :] - held_out[None, :, :]).sum(-1) < 1e-9).any(0)
    )  # no held-out frame was used
    assert model.audio_centroids.abs().sum() > 0


def test_cenet_enhances_the_chosen_layer_only():
    ds = cenet_data()
    model = build_model("cenet", ds.modalities, ds.feature_dims(), dict(vocab_size=4, ce_layer=2, dropout=0.0)).eval()
    model.prepare_from_training_data(ds.splits["train"], np.arange(24))
    batch = next(batches(ds.splits["train"], in_order(np.arange(4), 4)))
    inputs = {}
    hooks = [
        layer.register_forward_hook(lambda mod, args, out, i=i: inputs.__setitem__(i, args[0].detach().clone()))
        for i, layer in enumerate(model.lm.encoder.layer)
    ]
    model(batch)
    enhanced = dict(inputs)
    plain_states = model.lm(
        input_ids=batch["text_ids"], attention_mask=batch["text_mask"], output_hidden_states=True
    ).hidden_states
    for h in hooks:
        h.remove()
    # hidden_states[i] is the input of layer i without enhancement
    for i in range(2):
        torch.testing.assert_close(enhanced[i], plain_states[i])
    assert not torch.allclose(enhanced[2], plain_states[2])


def test_linear_schedule_warms_up_then_decays_every_group_alike():
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.AdamW([{"params": params[:1], "lr": 1e-3}, {"params": params[1:], "lr": 1e-4}])
    schedule = make_schedule(optimizer, "linear", 0.1, 100)
    lrs = []
    for _ in range(100):
        lrs.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        schedule.step()
    first = [lr[0] for lr in lrs]
    assert first[0] < 2e-4 and max(first) == pytest.approx(1e-3) and int(np.argmax(first)) == 10  # ramp over 10 steps
    assert all(b <= a for a, b in zip(first[10:], first[11:])) and first[-1] < 2e-5  # then down to ~0
    assert all(lr[1] == pytest.approx(lr[0] / 10) for lr in lrs)  # the text group keeps its ratio
    assert make_schedule(optimizer, "constant", 0.1, 100) is None
    with pytest.raises(ValueError, match="lr_schedule"):
        make_schedule(optimizer, "step", 0.1, 100)
