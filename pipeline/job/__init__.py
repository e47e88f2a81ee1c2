"""One job: its config (schema and checks), its data, the training loop and its listeners,
and one MLflow run out (``run.run_job``); a recorded config read back (``recorded``)."""
