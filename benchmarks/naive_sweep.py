"""The default sweep written the way a user would without backprop-lab: the naive peer.

scikit-learn's MLPClassifier (full-batch SGD, no momentum, the same iterations and
learning rates) over the same 27-config grid on the same moons split, joblib with one
worker per core, and each config an MLflow child run of one parent with its params and
its loss curve batched. ``benchmarks/bench_sweep.py`` times it beside ``make sweep``.

    python benchmarks/naive_sweep.py STORE_DIR [N_JOBS]
"""

import itertools
import sys
import time
import warnings

from joblib import Parallel, delayed
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID
from peers import full_batch_sgd

DEPTHS, WIDTHS, RATES = (3, 2, 1), (64, 16, 4), (0.01, 0.1, 1.0)
ITERATIONS = 2000


def fit_one(uri: str, experiment: str, parent: str, depth: int, width: int, rate: float):
    from sklearn.datasets import make_moons
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x, y = make_moons(n_samples=1000, noise=0.2, random_state=0)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=0
    )
    scaler = StandardScaler().fit(x_train)
    model = full_batch_sgd((width,) * depth, len(x_train), rate, ITERATIONS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(scaler.transform(x_train), y_train)
    accuracy = model.score(scaler.transform(x_test), y_test)
    client = MlflowClient(uri)
    run = client.create_run(
        experiment, run_name=f"d{depth}-w{width}-lr{rate}", tags={MLFLOW_PARENT_RUN_ID: parent}
    )
    now = int(time.time() * 1000)
    params = {"depth": depth, "width": width, "learning_rate": rate}
    curve = [Metric("loss", loss, now, step) for step, loss in enumerate(model.loss_curve_)]
    client.log_batch(
        run.info.run_id,
        metrics=[*curve, Metric("test_accuracy", accuracy, now, 0)],
        params=[Param(k, str(v)) for k, v in params.items()],
    )
    client.set_terminated(run.info.run_id)


def main() -> None:
    store, n_jobs = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else -1
    uri = f"sqlite:///{store}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("naive")
    parent = client.create_run(experiment, run_name="naive-sweep").info.run_id
    grid = itertools.product(DEPTHS, WIDTHS, RATES)
    Parallel(n_jobs=n_jobs)(delayed(fit_one)(uri, experiment, parent, *c) for c in grid)
    client.set_terminated(parent)


if __name__ == "__main__":
    main()
