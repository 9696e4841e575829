"""Model shapes and mechanisms: short sequences, missing modalities, task weights."""

import pytest
import torch

from ray_msa.data.synthetic import make_synthetic
from ray_msa.models import build_model
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
    assert out.score.shape == (6,) and out.extras["polarity_logit"].shape == (6,)
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
    assert torch.isfinite(out.score).all()


def test_text_only_model_has_one_shared_feature():
    ds = make_synthetic(sizes=(8, 4, 4), shapes={"text": (10, 16)})
    model = build_model("mtl", ds.modalities, ds.feature_dims(), HP)
    out = model(batch_of(ds))
    assert out.extras["weights_score"].shape == (6, 1)


def test_padding_does_not_change_the_prediction():
    ds = make_synthetic(sizes=(8, 4, 4))
    model = build_model("mtl", ds.modalities, ds.feature_dims(), HP).eval()
    b = batch_of(ds, 1)
    wider = {k: (torch.cat([v, torch.randn(1, 5, v.shape[-1])], 1) if k in ("text", "audio", "vision") else v) for k, v in b.items()}
    torch.testing.assert_close(model(b).score, model(wider).score, rtol=1e-4, atol=1e-5)


def test_finetuned_minilm_takes_token_ids():
    import numpy as np

    from ray_msa.data.text import prepare_text

    ds = prepare_text(make_synthetic(sizes=(8, 4, 4), shapes={"text": (10, 16), "audio": (5, 8)}), "finetune")
    model = build_model("mtl", ds.modalities, ds.feature_dims(), {**HP, "finetune_text": True})
    b = next(batches(ds.splits["train"], in_order(np.arange(4), 4)))
    out = model(b)
    model.loss(out, b)[0].backward()
    assert model.lm.embeddings.word_embeddings.weight.grad is not None
