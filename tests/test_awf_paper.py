"""Adaptive weight fusion as paper 001 writes it (Eq. 11-13), its ablation switches, B-fusion
under DeepSpeed ZeRO 2, and the optimizers its Table 7 compares."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.nn import functional as F

from ray_msa.config import TrainConfig
from ray_msa.data.synthetic import make_synthetic
from ray_msa.models import build_model
from ray_msa.search_space import trial_config
from ray_msa.train.batches import batches, in_order
from ray_msa.train.engine import make_engine
from ray_msa.train.loop import WorkerContext, run_cross_validation, train_epoch

AWF = dict(dim=16, lstm_hidden=16, post_fusion=8, dropout=0.0, omega_lr=0.05)


@pytest.fixture(scope="module")
def data():
    return make_synthetic(sizes=(96, 16, 16), signal={"text": 3.0, "audio": 0.5, "vision": 0.5}, seed=4)


def first_batch(ds, n=16):
    return next(batches(ds.splits["train"], in_order(np.arange(n), n)))


def w_grads(model):
    return {m: layer.weight.grad.clone() for m, layer in model.last.items()}


def test_a_fusion_reads_one_number_per_modality_through_3x3_weights(data):
    model = build_model("awf", data.modalities, data.feature_dims(), AWF)
    w1, w2 = model.attention[0], model.attention[2]
    assert w1.weight.shape == (3, 3) and w2.weight.shape == (3, 3)
    seen = {}
    w1.register_forward_hook(lambda mod, args, out: seen.setdefault("input", args[0].detach()))
    batch = first_batch(data)
    model(batch)
    z = model.unimodal(batch)
    assert seen["input"].shape == (16, 3)
    expected = torch.stack([z[m].mean(-1) for m in data.modalities], 1)  # avgpool of each Z_i to one number
    torch.testing.assert_close(seen["input"], expected, rtol=0, atol=1e-6)
    vector = build_model("awf", data.modalities, data.feature_dims(), {**AWF, "attention": "vector", "att_hidden": 8})
    assert vector.attention[0].weight.shape == (8, 16)  # the earlier form, a named option


@pytest.mark.parametrize("detach", [True, False])
def test_a_fusion_leaves_the_gradient_on_w_i_to_b_fusion(data, detach):
    """With the paper's reading the gradient on W_T/W_A/W_V is the one the same output gives
    when the A-fusion branch is a constant; without it, A-fusion adds to that gradient."""
    torch.manual_seed(0)
    model = build_model("awf", data.modalities, data.feature_dims(), {**AWF, "afusion_detach": detach})
    batch = first_batch(data)
    F.l1_loss(model(batch).prediction, batch["labels"]).backward()
    with_branch = w_grads(model)
    model.zero_grad()
    z = model.unimodal(batch)  # the same forward pass, the A-fusion branch held constant
    z_gb = torch.cat(model.balancer.weigh(z), -1)
    with torch.no_grad():
        alpha = model.attention(model.attention_input(z))
        z_att = torch.cat([alpha[:, i : i + 1] * z[m] for i, m in enumerate(data.modalities)], -1)
    F.l1_loss(model.to_prediction(model.head((z_gb + z_att) / 2)), batch["labels"]).backward()
    constant_branch = w_grads(model)
    for m in data.modalities:
        if detach:
            torch.testing.assert_close(with_branch[m], constant_branch[m], rtol=0, atol=1e-7)
        else:
            assert (with_branch[m] - constant_branch[m]).abs().max() > 1e-5


def test_b_fusion_off_keeps_omega_and_still_logs_the_gradients(data):
    model = build_model("awf", data.modalities, data.feature_dims(), {**AWF, "bfusion": False})
    batch = first_batch(data)
    output = model(batch)
    model.loss(output, batch)[0].backward()
    logged = model.after_backward(output, batch)
    torch.testing.assert_close(model.balancer.omega, torch.ones(3), rtol=0, atol=0)
    assert "omega_T" not in logged
    assert logged["grad_T"] == pytest.approx(model.last["text"].weight.grad.abs().mean().item(), rel=1e-6)
    assert {"alpha_T", "alpha_A", "alpha_V"} <= set(logged)


def test_without_a_fusion_the_attention_takes_no_part(data):
    model = build_model("awf", data.modalities, data.feature_dims(), {**AWF, "afusion": False})
    batch = first_batch(data)
    before = model(batch).prediction.detach()
    with torch.no_grad():
        for p in model.attention.parameters():
            p.add_(1.0)
    output = model(batch)
    torch.testing.assert_close(output.prediction, before, rtol=0, atol=0)
    model.loss(output, batch)[0].backward()
    assert all(p.grad is None for p in model.attention.parameters())
    assert "alpha_T" not in model.after_backward(output, batch)


def test_frozen_a_fusion_is_not_trained(data):
    model = build_model("awf", data.modalities, data.feature_dims(), {**AWF, "afusion_frozen": True})
    engine = make_engine(model, TrainConfig(lr=1e-2), torch.device("cpu"))
    before = [p.detach().clone() for p in model.attention.parameters()]
    train_epoch(engine, data.splits["train"], np.arange(64), 16, [0, 0, 0], WorkerContext())
    for p, b in zip(model.attention.parameters(), before):
        torch.testing.assert_close(p.detach(), b, rtol=0, atol=0)
    trained = {id(p) for g in engine.optimizer.param_groups for p in g["params"]}
    assert not trained & {id(p) for p in model.attention.parameters()}


def _omega_under_ddp_and_zero_2() -> dict[str, tuple[list[float], float, bool]]:
    """One epoch of awf under the DDP engine and under DeepSpeed ZeRO 2, in a process of its
    own: DeepSpeed caches its process groups, which outlive a destroyed torch group."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29531", RANK="0", LOCAL_RANK="0", WORLD_SIZE="1")
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    dist.init_process_group("gloo", rank=0, world_size=1)
    data = make_synthetic(sizes=(96, 16, 16), signal={"text": 3.0, "audio": 0.5, "vision": 0.5}, seed=4)
    out = {}
    for engine_name, stage in (("ddp", 0), ("deepspeed", 2)):
        torch.manual_seed(0)
        model = build_model("awf", data.modalities, data.feature_dims(), AWF)
        train = TrainConfig(lr=2e-3, engine=engine_name, zero_stage=stage, batch_size=16, grad_clip=0.0)
        engine = make_engine(model, train, torch.device("cpu"), total_steps=6)
        logged = train_epoch(engine, data.splits["train"], np.arange(96), 16, [0, 0, 0], WorkerContext())
        no_grad_attribute = model.last["text"].weight.grad is None
        out[engine_name] = (model.balancer.omega.tolist(), logged["train_grad_T"], no_grad_attribute)
    dist.destroy_process_group()
    return out


def test_b_fusion_works_under_deepspeed_zero_2():
    """ZeRO 2 partitions gradients (`.grad` is None); the engine's grad reader gathers them, so
    omega moves exactly as under the DDP engine."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        out = pool.apply(_omega_under_ddp_and_zero_2)
    (ddp_omega, ddp_grad, _), (ds_omega, ds_grad, ds_no_grad) = out["ddp"], out["deepspeed"]
    assert ds_no_grad  # what the old code silently skipped on
    assert ddp_omega != [1.0, 1.0, 1.0]
    np.testing.assert_allclose(ds_omega, ddp_omega, rtol=0, atol=1e-5)
    assert ds_grad == pytest.approx(ddp_grad, rel=1e-4)


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_each_optimizer_learns_the_planted_signal(optimizer):
    ds = make_synthetic(sizes=(240, 40, 40), signal={"text": 2.0, "audio": 1.0, "vision": 1.0}, seed=1)
    lr = {"sgd": 0.05, "adam": 3e-3, "adamw": 3e-3}[optimizer]
    trial = trial_config(
        "lf_dnn",
        {"hidden": 16, "post_fusion": 16, "optimizer": optimizer, "lr": lr, "max_epochs": 6, "folds": 2, "patience": 6},
    )
    assert trial.train.optimizer == optimizer
    summary = run_cross_validation(trial, ds, lambda m, s: None, WorkerContext())
    labels = np.concatenate([ds.splits["train"].labels, ds.splits["valid"].labels])
    mean_predictor = float(np.abs(labels - labels.mean()).mean())
    assert summary["mean_MAE"] < 0.8 * mean_predictor, (optimizer, summary["mean_MAE"], mean_predictor)
