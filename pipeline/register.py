"""``python -m pipeline.register RUN_ID | best``: a run's network in the MLflow Model Registry.

Logs the run's network as a pyfunc model (features in; class probabilities and the
label out; the training set's scaler inside) and registers it under the experiment's
name with the alias ``champion``. ``best`` is the latest sweep's best run, as the sweep
named it. Bad input (an unknown run, a run not FINISHED, a run without parameters.npz):
one line and exit 2, nothing registered.
"""

import argparse
import sys
from functools import partial

from pipeline.job.recorded import training_of
from pipeline.processes import entry
from pipeline.store import tracking
from pipeline.store.model import ALIAS, best_run_id, register


@entry.point()
def main(argv: list[str] | None = None) -> int:
    """The registration of the command line ``argv``; the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run id, or best: the latest sweep's best run")
    tracking.add_tracking_uri_argument(parser)
    args = parser.parse_args(argv)
    client = tracking.connect(tracking.tracking_uri(args.tracking_uri))
    run_id = best_run_id(client) if args.run == "best" else args.run
    done = register(client, run_id, partial(training_of, client))
    print(f"registered {done.name} version {done.version} ({ALIAS}) from run {done.run_id}")
    print(f'load it: mlflow.pyfunc.load_model("models:/{done.name}@{ALIAS}")')
    return 0


if __name__ == "__main__":
    sys.exit(entry.run(main))
