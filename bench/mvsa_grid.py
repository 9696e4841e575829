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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--encoders", default="pretrained,scratch")
    parser.add_argument("--fusions", default="concat,cross,bicross")
    parser.add_argument("--epochs", type=int, help="maximum epochs per fold (default: the search space's)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting of the start configuration (YAML value), e.g. --set lr_schedule=linear",
    )
    args = parser.parse_args()
    import yaml

    from ray_msa.data import load_dataset
    from ray_msa.search_space import load_space
    from ray_msa.train.loop import WorkerContext, run_cross_validation
    from ray_msa.trial import RunContext

    # Every cell trains the search space's start configuration for its encoder (learning rates differ), so
    # cells of one encoder differ only in their fusion.
    space = load_space("image_text")
    flags = {"metric": "Acc", "seed": 0, "folds": args.folds, **({"max_epochs": args.epochs} if args.epochs else {})}
    overrides = {}
    for item in args.set:  # training or model settings; the config types read YAML 1.1's "1e-3" as a number
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    cells = [
        space.build(
            {**space.start_for(encoder=encoder, fusion="concat"), "encoder": encoder, "fusion": fusion, **overrides},
            flags,
        )
        for encoder in args.encoders.split(",")
        for fusion in args.fusions.split(",")
    ]
    dataset = cells[0].spec.prepare_text(load_dataset("mvsa", args.data), cells[0].text)
    print(dataset.summary(), flush=True)
    rows = []
    for trial in cells:
        started = time.perf_counter()
        name = f"{trial.model.encoder}/{trial.model.fusion}"
        s = run_cross_validation(
            trial, dataset, lambda m, state: None, WorkerContext(), run=RunContext(trial_name=name)
        )
        rows.append((trial.model.encoder, trial.model.fusion, s, time.perf_counter() - started))
    base = cells[0].train
    print(
        f"\nat most {base.max_epochs} epochs per fold, patience {base.patience}"
        + "".join(f"; {item}" for item in args.set)
    )
    print(f"| encoder | fusion | accuracy ({args.folds}-fold) | weighted F1 | minutes |\n|---|---|---|---|---|")
    for encoder, fusion, s, seconds in rows:
        print(
            f"| {encoder} | {fusion} | {s['mean_Acc']:.4f} ± {s['std_Acc']:.4f} | {s['mean_F1_weighted']:.4f} ± "
            f"{s['std_F1_weighted']:.4f} | {seconds / 60:.1f} |"
        )


if __name__ == "__main__":
    main()
