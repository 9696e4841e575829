"""The fusion x encoder table for image+text posts: one configuration, every fusion
(concat, cross, bicross) with every encoder (pretrained, scratch), each a stratified
K-fold cross-validation on the labelled posts; prints mean ± std accuracy and weighted F1
as a Markdown table.

    python bench/mvsa_grid.py --data ../shared/data/mvsa_ecnu
    python bench/mvsa_grid.py --data ../shared/data/mvsa_ecnu --encoders pretrained --folds 5
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# One middle-of-the-space configuration for every cell, so the cells differ only in what the table names.
CONFIG = dict(arch="image_text", max_epochs=15, patience=3, batch_size=32, weight_decay=0.01, grad_clip=1.0, loss="focal",
              heads=4, ffn=512, dim=256, layers=1, dropout=0.2, lr=5e-4, focal_alpha=0.25, focal_gamma=2.0, metric="Acc", seed=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--encoders", default="pretrained,scratch")
    parser.add_argument("--fusions", default="concat,cross,bicross")
    args = parser.parse_args()
    from ray_msa.data import load_dataset
    from ray_msa.data.text import prepare_text
    from ray_msa.train.loop import WorkerContext, run_cross_validation

    dataset = prepare_text(load_dataset("mvsa", args.data), "frozen", keep_ids=True)
    print(dataset.summary(), flush=True)
    rows = []
    for encoder in args.encoders.split(","):
        for fusion in args.fusions.split(","):
            started = time.perf_counter()
            config = {**CONFIG, "encoder": encoder, "fusion": fusion, "folds": args.folds, "trial_name": f"{encoder}/{fusion}"}
            s = run_cross_validation(config, dataset, lambda m, state: None, WorkerContext())
            rows.append((encoder, fusion, s, time.perf_counter() - started))
    print(f"\n| encoder | fusion | accuracy ({args.folds}-fold) | weighted F1 | minutes |\n|---|---|---|---|---|")
    for encoder, fusion, s, seconds in rows:
        print(f"| {encoder} | {fusion} | {s['mean_Acc']:.4f} ± {s['std_Acc']:.4f} | {s['mean_F1_weighted']:.4f} ± {s['std_F1_weighted']:.4f} | {seconds / 60:.1f} |")


if __name__ == "__main__":
    main()
