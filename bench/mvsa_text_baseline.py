"""A non-neural yardstick for the from-scratch encoders: TF-IDF (word 1-2-grams and
character 2-5-grams) + logistic regression on the cleaned post texts alone, stratified
5-fold, with scikit-learn. Prints mean ± std accuracy and weighted F1 per C.

    python bench/mvsa_text_baseline.py --data ../shared/data/mvsa_ecnu
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline, make_union

from ray_msa.data.mvsa import read_posts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--C", default="1,3,10", help="inverse regularisation strengths to try")
    args = parser.parse_args()
    posts = read_posts(Path(args.data), "train.txt", labelled=True)
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=0)
    print(f"| C | accuracy ({args.folds}-fold) | weighted F1 |\n|---|---|---|")
    for c in (float(v) for v in args.C.split(",")):
        features = make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
        )
        scores = cross_validate(
            make_pipeline(features, LogisticRegression(C=c, max_iter=2000)),
            list(posts.texts),
            posts.labels,
            cv=folds,
            scoring=("accuracy", "f1_weighted"),
        )
        acc, f1 = scores["test_accuracy"], scores["test_f1_weighted"]
        print(f"| {c:g} | {acc.mean():.4f} ± {acc.std():.4f} | {f1.mean():.4f} ± {f1.std():.4f} |", flush=True)


if __name__ == "__main__":
    main()
