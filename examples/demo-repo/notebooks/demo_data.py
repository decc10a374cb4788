"""Data helpers shared by the demo notebooks (a module beside them, as real repos have).

Each notebook reads what the previous step wrote to `artifacts_dir`. When that
is missing (a notebook checked on its own in CI, without the steps before it),
the helpers rebuild the same deterministic split, or fit the default model, in
memory, so every notebook also runs standalone. Files are written atomically so
that notebooks running side by side never read half a file.
"""

import os
import tempfile

import joblib
import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width", "target"]


def make_split(rows=150, seed=0):
    """The iris data, shuffled with `seed`, cut to `rows`, split 80/20 stratified."""
    iris = load_iris(as_frame=False)
    X, y = iris.data, iris.target
    order = np.random.default_rng(seed).permutation(len(y))[:rows]
    X, y = X[order], y[order]
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, stratify=y, random_state=seed
    )
    return {"train": (X_train, y_train), "test": (X_test, y_test)}


def _atomic_path(path):
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    os.close(fd)
    return tmp


def write_csv(path, X, y):
    tmp = _atomic_path(path)
    data = np.column_stack([X, y])
    np.savetxt(tmp, data, delimiter=",", header=",".join(COLUMNS), comments="",
               fmt=["%.4f"] * X.shape[1] + ["%d"])
    os.replace(tmp, path)


def load_split(artifacts_dir, part):
    """`part` ("train" or "test") from artifacts_dir, else rebuilt in memory."""
    path = os.path.join(artifacts_dir, f"{part}.csv")
    if not os.path.exists(path):
        print(f"{path} not found: rebuilding the default split in memory")
        return make_split()[part]
    data = np.loadtxt(path, delimiter=",", skiprows=1)
    return data[:, :-1], data[:, -1].astype(int)


def save_model(model, artifacts_dir):
    path = os.path.join(artifacts_dir, "model.joblib")
    tmp = _atomic_path(path)
    joblib.dump(model, tmp)
    os.replace(tmp, path)
    return path


def load_model(artifacts_dir):
    """The trained model from artifacts_dir, else the default model fitted in memory."""
    path = os.path.join(artifacts_dir, "model.joblib")
    if not os.path.exists(path):
        print(f"{path} not found: fitting the default model in memory")
        X_train, y_train = load_split(artifacts_dir, "train")
        return LogisticRegression(max_iter=200).fit(X_train, y_train)
    return joblib.load(path)
