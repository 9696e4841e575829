"""A stored model scored under each condition of a protocol, on one split, exactly as `predict` applies it."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ray_msa.data.dataset import MODALITIES, SPLITS, MSADataset
from ray_msa.data.text import MAX_TEXT_TOKENS, uncached
from ray_msa.robustness.protocols import Condition, TextInput, frame_stds, modality_conditions, perturb
from ray_msa.robustness.scores import effective_robustness, relative_robustness
from ray_msa.serving.stored import StoredModel

ROBUSTNESS_METRIC = {"mmsa": "Non0_Acc2", "sims": "Mult_acc_2", "emotions": "Mean_F1", "classes": "Acc"}


def conditions(protocol: str, modalities: tuple[str, ...], levels: tuple[float, ...], seeds: int) -> list[Condition]:
    """What a protocol evaluates. A condition that draws nothing (modality missing, level 0) needs one seed."""
    if protocol == "modality_missing":
        return [Condition(protocol, present=present) for present in modality_conditions(modalities)]
    return [Condition(protocol, level, seed=s) for level in levels for s in (range(seeds) if level > 0 else [0])]


def model_modalities(stored: StoredModel, dataset: MSADataset) -> tuple[str, ...]:
    """The inputs a model reads that a protocol can remove: its modalities; an image+text post's text and image."""
    if dataset.splits["train"].image is not None or dataset.splits["test"].image is not None:
        return (*(m for m in stored.modalities if m != "vision"), "image")  # vision: the image's features
    return stored.modalities


def evaluate(
    models: list[StoredModel], dataset: MSADataset, split_name: str, chosen: list[list[Condition]], source: str
) -> list[pd.DataFrame]:
    """Each model under each of its conditions (`chosen[k]` for `models[k]`): one table per model, a row per
    condition with protocol, condition, level, seed and every metric of the dataset. A condition is drawn
    once for all models, so models evaluated together see identical inputs (and share the encoded texts)."""
    clean = dataset.splits[split_name]
    stds = {
        m: frame_stds(getattr(clean, m), getattr(clean, f"{m}_lengths"))
        for m in MODALITIES
        if getattr(clean, m) is not None
    }
    empty = clean.take(np.zeros(0, np.int64))
    alone = dataset.with_splits(**{s: empty for s in SPLITS if s != split_name})
    rows: list[list[dict]] = [[] for _ in models]
    order = list(dict.fromkeys(c for listed in chosen for c in listed))
    with uncached():  # perturbed texts are encoded for this run only
        for condition in order:
            drawn: dict = {}
            for k, stored in enumerate(models):
                if condition not in chosen[k]:
                    continue
                text = TextInput(stored.trial.text.mode, stored.trial.text.model, MAX_TEXT_TOKENS)
                if text not in drawn:
                    drawn[text] = perturb(clean, condition, text, stds)
                prepared = stored.prepare(
                    alone.with_splits(**{split_name: drawn[text]}).only(stored.modalities), source
                )
                part = prepared.splits[split_name]
                metrics = stored.metrics(part, stored.raw_predictions(part)) or {}
                row = {"protocol": condition.protocol, "condition": condition.label, "level": condition.level}
                rows[k].append({**row, "seed": condition.seed, **metrics})
    return [pd.DataFrame(r) for r in rows]


def curve(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Mean and std over seeds of `metric` per condition, in the table's order of conditions."""
    grouped = table.groupby(["condition", "level"], sort=False)[metric]
    out = grouped.agg(["mean", "std", "count"]).reset_index()
    out["std"] = out["std"].fillna(0.0)
    return out


def summary(table: pd.DataFrame, metric: str, baseline: pd.DataFrame | None = None) -> dict[str, float]:
    """Relative robustness of a level curve, and effective robustness against `baseline`'s curve (same levels)."""
    mine = curve(table, metric)
    levels, values = mine["level"].to_numpy(), mine["mean"].to_numpy()
    out = {f"relative_robustness_{metric}": relative_robustness(levels, values), f"clean_{metric}": float(values[0])}
    if baseline is not None:
        theirs = curve(baseline, metric)
        if np.allclose(theirs["level"].to_numpy(), levels):
            out[f"effective_robustness_{metric}"] = effective_robustness(
                levels, values, theirs["mean"].to_numpy(), metric
            )
    return out
