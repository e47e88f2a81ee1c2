"""``python -m pipeline.register RUN_ID | best``: a run's network in the MLflow Model Registry.

Logs the run's network as a pyfunc model (features in; class probabilities and the
label out; the training set's scaler inside) and registers it under the experiment's
name with the alias ``champion``. ``best`` is the latest sweep's best run, as the sweep
named it. Bad input (an unknown run, a run not FINISHED, a run without parameters.npz):
one line and exit 2, nothing registered.
"""

import argparse
from functools import partial

from pipeline.job.recorded import training_of
from pipeline.processes import settings
from pipeline.processes.errors import InputError, fail
from pipeline.store import tracking
from pipeline.store.model import ALIAS, best_run_id, register


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run id, or best: the latest sweep's best run")
    tracking.add_tracking_uri_argument(parser)
    args = parser.parse_args(argv)
    try:
        client = tracking.connect(tracking.tracking_uri(args.tracking_uri))
        run_id = best_run_id(client) if args.run == "best" else args.run
        done = register(client, run_id, partial(training_of, client))
    except InputError as error:
        fail(error)
    print(f"registered {done.name} version {done.version} ({ALIAS}) from run {done.run_id}")
    print(f'load it: mlflow.pyfunc.load_model("models:/{done.name}@{ALIAS}")')


if __name__ == "__main__":
    settings.skip_final_collection()
    settings.give_up_on_silent_servers()
    main()
