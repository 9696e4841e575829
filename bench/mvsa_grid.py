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
    from ray_msa.models.image_text import prepare_post_text
    from ray_msa.search_space import load_space, load_start
    from ray_msa.train.loop import WorkerContext, run_cross_validation

    # Every cell trains the search space's start configuration for its encoder (learning rates differ), so
    # cells of one encoder differ only in their fusion.
    fixed, _ = load_space("image_text")
    starts = load_start("image_text")
    base = {**fixed, "arch": "image_text", "metric": "Acc", "seed": 0}
    if args.epochs:
        base["max_epochs"] = args.epochs
    for item in args.set:
        key, _, value = item.partition("=")
        value = yaml.safe_load(value)
        try:  # YAML 1.1 reads "1e-3" as a string
            value = float(value) if isinstance(value, str) else value
        except ValueError:
            pass
        base[key] = value

    dataset = prepare_post_text(load_dataset("mvsa", args.data))
    print(dataset.summary(), flush=True)
    rows = []
    for encoder in args.encoders.split(","):
        for fusion in args.fusions.split(","):
            started = time.perf_counter()
            start = next((s for s in starts if s.get("encoder") == encoder), starts[0] if starts else {})
            config = {
                **start,
                **base,
                "encoder": encoder,
                "fusion": fusion,
                "folds": args.folds,
                "trial_name": f"{encoder}/{fusion}",
            }
            s = run_cross_validation(config, dataset, lambda m, state: None, WorkerContext())
            rows.append((encoder, fusion, s, time.perf_counter() - started))
    print(
        f"\nat most {base['max_epochs']} epochs per fold, patience {base['patience']}"
        + "".join(f"; {item}" for item in args.set)
    )
    print(f"| encoder | fusion | accuracy ({args.folds}-fold) | weighted F1 | minutes |\n|---|---|---|---|---|")
    for encoder, fusion, s, seconds in rows:
        print(
            f"| {encoder} | {fusion} | {s['mean_Acc']:.4f} ± {s['std_Acc']:.4f} | {s['mean_F1_weighted']:.4f} ± {s['std_F1_weighted']:.4f} | {seconds / 60:.1f} |"
        )


if __name__ == "__main__":
    main()
