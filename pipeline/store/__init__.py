"""The MLflow store: connecting, runs and batched logging (``tracking``), runs read back as
tables (``tables``), figures (``plots``), the registered model (``model``) and MLflow's web
servers (``web``)."""
