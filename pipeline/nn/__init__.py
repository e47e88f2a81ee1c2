"""The lecture's L-layer network in NumPy: X of shape (n_x, m), W[l] of shape (n_l, n_{l-1}).

One optimisation step, as on the slides::

    AL, caches = L_model_forward(X, parameters, hidden_activation="relu")
    cost = compute_cost(AL, Y)
    grads = L_model_backward(AL, Y, caches)
    parameters = update_parameters(parameters, grads, learning_rate)
"""

from pipeline.nn.activations import DERIVATIVES, HIDDEN_ACTIVATIONS
from pipeline.nn.backward import L_model_backward, linear_activation_backward, linear_backward
from pipeline.nn.cost import compute_cost
from pipeline.nn.forward import L_model_forward, linear_activation_forward, linear_forward, predict
from pipeline.nn.initialization import INIT_SCALES, initialize_parameters_deep
from pipeline.nn.update import update_parameters

__all__ = [
    "DERIVATIVES",
    "HIDDEN_ACTIVATIONS",
    "INIT_SCALES",
    "L_model_backward",
    "L_model_forward",
    "compute_cost",
    "initialize_parameters_deep",
    "linear_activation_backward",
    "linear_activation_forward",
    "linear_backward",
    "linear_forward",
    "predict",
    "update_parameters",
]
