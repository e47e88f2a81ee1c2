"""The lecture's L-layer network in NumPy: X of shape (n_x, m), W[l] of shape (n_l, n_{l-1}).

One optimisation step, as on the slides::

    AL, caches = L_model_forward(X, parameters, hidden_activation="relu")
    cost = compute_cost(AL, Y)
    grads = L_model_backward(AL, Y, caches)
    parameters = update_parameters(parameters, grads, learning_rate)

and the course's second part: L2 regularization (compute_cost_with_regularization,
L_model_backward(..., lambd)), random_mini_batches, momentum, RMSprop and Adam
(pipeline.nn.optimizers, by name in OPTIMIZERS), learning-rate decay (LR_DECAYS), and one
lean epoch of all of them together (MiniBatchTraining, mini_batch_epoch).
"""

from pipeline.nn.activations import DERIVATIVES, HIDDEN_ACTIVATIONS
from pipeline.nn.backward import L_model_backward, linear_activation_backward, linear_backward
from pipeline.nn.cost import compute_cost, compute_cost_with_regularization
from pipeline.nn.decay import LR_DECAYS
from pipeline.nn.epoch import MiniBatchTraining, mini_batch_epoch
from pipeline.nn.forward import L_model_forward, linear_activation_forward, linear_forward, predict
from pipeline.nn.initialization import INIT_SCALES, initialize_parameters_deep
from pipeline.nn.minibatches import random_mini_batches
from pipeline.nn.optimizers import (
    OPTIMIZERS,
    initialize_adam,
    initialize_rmsprop,
    initialize_velocity,
    update_parameters_with_adam,
    update_parameters_with_momentum,
    update_parameters_with_rmsprop,
)
from pipeline.nn.update import update_parameters

__all__ = [
    "DERIVATIVES",
    "HIDDEN_ACTIVATIONS",
    "INIT_SCALES",
    "LR_DECAYS",
    "OPTIMIZERS",
    "L_model_backward",
    "L_model_forward",
    "MiniBatchTraining",
    "compute_cost",
    "compute_cost_with_regularization",
    "initialize_adam",
    "initialize_parameters_deep",
    "initialize_rmsprop",
    "initialize_velocity",
    "linear_activation_backward",
    "linear_activation_forward",
    "linear_backward",
    "linear_forward",
    "mini_batch_epoch",
    "predict",
    "random_mini_batches",
    "update_parameters",
    "update_parameters_with_adam",
    "update_parameters_with_momentum",
    "update_parameters_with_rmsprop",
]
