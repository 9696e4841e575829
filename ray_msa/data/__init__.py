"""Datasets: one type, readers for the field's formats, folds."""

from ray_msa.data.dataset import MSADataset, Split
from ray_msa.data.sources import load_dataset

__all__ = ["MSADataset", "Split", "load_dataset"]
