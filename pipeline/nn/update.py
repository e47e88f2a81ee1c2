"""The gradient-descent update, in place on the parameters' arrays.

W[l] := W[l] - alpha dW[l]
b[l] := b[l] - alpha db[l]
"""

from pipeline.nn.backward import Gradients
from pipeline.nn.initialization import Parameters


def update_parameters(parameters: Parameters, grads: Gradients, learning_rate: float) -> Parameters:
    """One gradient-descent step on every W[l] and b[l]; returns the same (updated) dict."""
    alpha = float(learning_rate)  # a Python float keeps float32 arrays in float32
    for name, value in parameters.items():
        value -= alpha * grads[f"d{name}"]
    return parameters
