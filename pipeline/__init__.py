"""backprop-lab: Hydra sweeps of a NumPy backprop network, tracked in MLflow."""
