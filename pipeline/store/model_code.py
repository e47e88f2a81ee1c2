"""The pyfunc model's code, as MLflow's "models from code" loads it (no pickled object)."""

from mlflow.models import set_model

from pipeline.store.model import Network

set_model(Network())
