"""The seed papers' figures from the runs `bench/seed_papers.sh` leaves in its tracking store.

- 000 Fig. 7: the multi-task model's per-task weights over the six shared features. Each fold run of
  the `full` variant holds one box plot per task (the weights over that fold's validation samples at
  its best epoch); this copies fold 0's and prints, per task and feature, the batch-mean weight of the
  fold's last epoch averaged over the folds.
- 001 Fig. 1 and 6a: the gradient reaching each modality's last linear layer per epoch, without
  B-fusion (`no_bfusion`) and with it (`full`), and omega per epoch, from fold 0 of the awf ablation.
- Every ablation and sweep with all the dataset's metrics (`*.full.md`; the commands print four).

    python bench/seed_paper_figures.py [--tracking-uri URI] [--out bench/results/seed_papers]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

from ray_msa.metrics import ALL_METRICS
from ray_msa.tracking import PARENT

ROOT = Path(__file__).resolve().parents[1]


def latest_ablation(client: MlflowClient, dataset: str, arch: str):
    """The newest finished ablation run of `arch` on `dataset`."""
    experiment = client.get_experiment_by_name(f"ray_msa-{dataset}")
    runs = client.search_runs(
        [experiment.experiment_id],
        f"tags.role = 'ablation' and tags.arch = '{arch}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise SystemExit(f"error: no finished {arch} ablation on {dataset}. Fix: run bench/seed_papers.sh first")
    return runs[0]


def children(client: MlflowClient, run) -> list:
    return client.search_runs([run.info.experiment_id], f"tags.`{PARENT}` = '{run.info.run_id}'", max_results=1000)


def folds_of(client: MlflowClient, ablation, point: str) -> list:
    """The fold runs of one variant, by fold number."""
    (variant,) = [r for r in children(client, ablation) if r.data.tags.get("point") == point]
    return sorted(children(client, variant), key=lambda r: r.info.run_name)


def copy_artifact(client: MlflowClient, run_id: str, name: str, target: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(client.download_artifacts(run_id, name, tmp), target)
    print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")


def mtl_fig7(client: MlflowClient, out: Path) -> None:
    folds = folds_of(client, latest_ablation(client, "mosi", "mtl"), "full")
    for task in ("score", "polarity", "intensity"):
        copy_artifact(client, folds[0].info.run_id, f"shared_feature_weights_{task}.png", out / f"000_fig7_{task}.png")
    names = sorted(k for k in folds[0].data.metrics if k.startswith("train_sfw_"))
    found = list(dict.fromkeys(n.split("_", 3)[3] for n in names))
    features = sorted(found, key=lambda f: (len(f), "TAV".find(f[0]), "TAV".find(f[-1])))  # T A V TA TV AV
    print("\n000 Fig. 7: mean weight of each shared feature per task (last epoch, mean over folds)")
    print("| task | " + " | ".join(features) + " |")
    print("|---|" + "---|" * len(features))
    for task in ("score", "polarity", "intensity"):
        cells = [np.mean([f.data.metrics[f"train_sfw_{task}_{feat}"] for f in folds]) for feat in features]
        print(f"| {task} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


def awf_gradients(client: MlflowClient, out: Path) -> None:
    ablation = latest_ablation(client, "mosi", "awf")
    for point, label in (("no_bfusion", "without_bfusion"), ("full", "with_bfusion")):
        fold0 = folds_of(client, ablation, point)[0]
        copy_artifact(client, fold0.info.run_id, "grad_over_epochs.png", out / f"001_fig1_6a_grad_{label}.png")
        if point == "full":
            copy_artifact(client, fold0.info.run_id, "omega_over_epochs.png", out / "001_omega_with_bfusion.png")
        history = {m: [h.value for h in client.get_metric_history(fold0.info.run_id, f"train_grad_{m}")] for m in "TAV"}
        print(f"\n001 gradients per epoch, fold 0, {point}:")
        for m, values in history.items():
            print(f"  g_{m}: " + " ".join(f"{v:.2e}" for v in values))


def full_tables(client: MlflowClient, out: Path) -> None:
    """Every finished ablation and sweep in the store with all the dataset's metrics (the commands print
    the first four): fold mean ± std per point, in the order the points ran. One markdown file each."""
    for experiment in client.search_experiments():
        if not experiment.name.startswith("ray_msa-"):
            continue
        parents = [
            run
            for role in ("ablation", "sweep")
            for run in client.search_runs(
                [experiment.experiment_id], f"tags.role = '{role}' and attributes.status = 'FINISHED'"
            )
        ]
        for parent in parents:
            points = sorted(children(client, parent), key=lambda r: r.info.start_time)
            names = [k[len("mean_") :] for k in points[0].data.metrics if k.startswith("mean_")]
            names = [n for n in ALL_METRICS if n in names]
            lines = ["| point | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for point in points:
                m = point.data.metrics
                cells = [f"{m[f'mean_{n}']:.4f} ± {m[f'std_{n}']:.4f}" for n in names]
                lines.append(f"| {point.data.tags.get('point', point.info.run_name)} | " + " | ".join(cells) + " |")
            name = f"{parent.data.tags['role']}_{parent.data.tags.get('arch', '')}_{parent.info.run_id[:8]}.full.md"
            (out / name).write_text("\n".join(lines) + "\n")
            print(f"wrote {out / name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=f"sqlite:///{ROOT}/mlruns/seed_papers.db")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/seed_papers")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(args.tracking_uri)
    full_tables(client, args.out)
    awf_gradients(client, args.out)
    mtl_fig7(client, args.out)


if __name__ == "__main__":
    main()
