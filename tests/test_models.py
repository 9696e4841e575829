"""Model shapes and mechanisms: short sequences, missing modalities, task weights."""

import pytest
import torch

from ray_msa.config import TextConfig
from ray_msa.data.synthetic import make_synthetic
from ray_msa.models import build_model
from ray_msa.models.layers import Dropout, mask_rate
from ray_msa.train.batches import batches, in_order

HP = dict(heads=4, ffn=64, dropout=0.1, alpha=1.0, beta=0.5, gamma=0.5)


def batch_of(ds, n=6):
    import numpy as np

    return next(batches(ds.splits["train"], in_order(np.arange(n), n)))


def test_mtl_output_and_loss():
    ds = make_synthetic(sizes=(12, 4, 4))
    model = build_model("mtl", ds.modalities, ds.feature_dims(), HP)
    b = batch_of(ds)
    out = model(b)
    assert out.prediction.shape == (6,) and out.extras["polarity_logit"].shape == (6,)
    loss, parts = model.loss(out, b)
    assert loss.ndim == 0 and set(parts) == {"loss_score", "loss_polarity", "loss_intensity"}
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_task_scoring_weights_sum_to_one_over_six_features():
    ds = make_synthetic(sizes=(12, 4, 4))
    model = build_model("mtl", ds.modalities, ds.feature_dims(), HP).eval()
    out = model(batch_of(ds))
    for task in ("score", "polarity", "intensity"):
        w = out.extras[f"weights_{task}"]
        assert w.shape == (6, 6)  # batch x (3 unimodal + 3 cross-modal features)
        torch.testing.assert_close(w.sum(-1), torch.ones(6))


@pytest.mark.parametrize("length", [1, 2, 3])
def test_sequences_shorter_than_the_kernel(length):
    ds = make_synthetic(sizes=(8, 4, 4), shapes={"text": (length, 16), "audio": (length, 8), "vision": (1, 12)})
    model = build_model("mtl", ds.modalities, ds.feature_dims(), HP)
    out = model(batch_of(ds))
    assert torch.isfinite(out.prediction).all()


def test_text_only_model_has_one_shared_feature():
    ds = make_synthetic(sizes=(8, 4, 4), shapes={"text": (10, 16)})
    model = build_model("mtl", ds.modalities, ds.feature_dims(), HP)
    out = model(batch_of(ds))
    assert out.extras["weights_score"].shape == (6, 1)


def test_padding_does_not_change_the_prediction():
    ds = make_synthetic(sizes=(8, 4, 4))
    model = build_model("mtl", ds.modalities, ds.feature_dims(), HP).eval()
    b = batch_of(ds, 1)
    wider = {
        k: (torch.cat([v, torch.randn(1, 5, v.shape[-1])], 1) if k in ("text", "audio", "vision") else v)
        for k, v in b.items()
    }
    torch.testing.assert_close(model(b).prediction, model(wider).prediction, rtol=1e-4, atol=1e-5)


def test_finetuned_minilm_takes_token_ids():
    import numpy as np

    from ray_msa.data.text import prepare_text

    ds = prepare_text(make_synthetic(sizes=(8, 4, 4), shapes={"text": (10, 16), "audio": (5, 8)}), "finetune")
    model = build_model("mtl", ds.modalities, ds.feature_dims(), HP, TextConfig(mode="finetune"))
    b = next(batches(ds.splits["train"], in_order(np.arange(4), 4)))
    out = model(b)
    model.loss(out, b)[0].backward()
    assert model.lm.embeddings.word_embeddings.weight.grad is not None


BASELINES = {
    "mult": dict(dim=20, heads=4, layers=2, kernel_text=3, kernel_audio=1, kernel_vision=5),
    "tfn": dict(text_hidden=8, av_hidden=4, post_fusion=16),
    "lmf": dict(text_hidden=8, av_hidden=4, rank=3, fusion_dim=8),
    "lf_dnn": dict(hidden=8, post_fusion=8),
    "lf_lstm": dict(hidden=8, post_fusion=8),
    "awf": dict(dim=8, lstm_hidden=8, att_hidden=4),
}


@pytest.mark.parametrize("arch", sorted(BASELINES))
@pytest.mark.parametrize(
    "shapes",
    [None, {"text": (2, 16), "audio": (1, 8), "vision": (3, 12)}, {"text": (10, 16)}],
    ids=["seq", "short", "text-only"],
)
def test_baselines_share_the_interface(arch, shapes):
    ds = make_synthetic(sizes=(8, 4, 4), shapes=shapes)
    model = build_model(arch, ds.modalities, ds.feature_dims(), BASELINES[arch])
    b = batch_of(ds)
    out = model(b)
    assert out.prediction.shape == (6,) and torch.isfinite(out.prediction).all()
    model.loss(out, b)[0].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("arch", ["mult", "mtl", "lf_lstm", "tfn"])
def test_padding_values_never_change_outputs(arch):
    ds = make_synthetic(sizes=(8, 4, 4))
    config = HP if arch == "mtl" else BASELINES[arch]
    model = build_model(arch, ds.modalities, ds.feature_dims(), config).eval()
    b = batch_of(ds, 6)
    noisy = dict(b)
    for m in ("text", "audio", "vision"):
        pad = torch.arange(b[m].size(1))[None, :] >= b[f"{m}_lengths"][:, None]
        noisy[m] = torch.where(pad.unsqueeze(-1), 100 * torch.randn_like(b[m]), b[m])
    torch.testing.assert_close(model(b).prediction, model(noisy).prediction, rtol=1e-4, atol=1e-4)


def test_mult_chunked_attention_matches_one_block(monkeypatch):
    import ray_msa.models.mult as mult

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 300, 8), torch.randn(2, 4, 200, 8), torch.randn(2, 4, 200, 8)
    allowed = torch.rand(2, 1, 1, 200) > 0.2
    monkeypatch.setattr(mult, "CHUNK_BYTES", 10_000)  # forces blocks of a few query rows
    chunked = mult.attention(q, k, v, allowed, dropout=1e-9)  # > 0 takes the chunked path, drops nothing
    whole = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-5)


def test_mult_attention_dropout_keeps_one_minus_p_without_bias():
    from ray_msa.models.mult import attention, dropout_keep_mask

    torch.manual_seed(0)
    for p in (0.0, 0.1, 0.3, 0.5):
        assert (
            abs(dropout_keep_mask(torch.Size((1000, 1000)), p, torch.device("cpu")).float().mean().item() - (1 - p))
            < 0.003
        )
    q, k, v = torch.randn(1, 2, 50, 8), torch.randn(1, 2, 40, 8), torch.randn(1, 2, 40, 8)
    allowed = torch.ones(1, 1, 1, 40, dtype=torch.bool)
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    mean = sum(attention(q, k, v, allowed, 0.3) for _ in range(2000)) / 2000  # inverted dropout: unbiased
    assert (mean - exact).abs().mean() < 0.01


def test_cpu_dropout_keeps_one_minus_p_scales_the_rest_and_routes_gradients_through_the_mask():
    """The models' Dropout draws its own CPU mask: each element kept with probability 1 - p and scaled by
    1 / (1 - p), the gradient flows through kept elements only, a seed repeats its mask, eval is the identity."""
    x = torch.randn(500, 400, requires_grad=True)
    for p in (0.1, 0.2, 0.5):
        torch.manual_seed(0)
        y = Dropout(p).train()(x)
        kept = y != 0
        scale = 1.0 / (1.0 - mask_rate(p))
        assert abs(kept.float().mean().item() - (1 - p)) < 0.004  # 200k elements
        assert torch.equal(y[kept], x[kept] * scale)
        y.sum().backward()
        assert torch.equal(x.grad, kept.float() * scale)
        x.grad = None
        torch.manual_seed(0)
        assert torch.equal(Dropout(p).train()(x), y)
        assert not torch.equal(Dropout(p).train()(x), y)  # the next draw differs
    mean = sum(Dropout(0.3).train()(x.detach()) for _ in range(400)) / 400  # inverted dropout: unbiased
    assert (mean - x.detach()).abs().mean() < 0.05 * x.detach().abs().mean()
    assert torch.equal(Dropout(0.5).eval()(x), x) and torch.equal(Dropout(0.0).train()(x), x)
