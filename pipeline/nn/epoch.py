"""One epoch of mini-batch training, with every array allocated once, before the first.

For each mini-batch (X_t, Y_t) of the epoch's order (pipeline.nn.minibatches), with t
counting the updates since training began:

    AL, caches = L_model_forward(X_t, parameters, hidden_activation=...)
    grads = L_model_backward(AL, Y_t, caches, lambd)    (m = the batch's size)
    t := t + 1; one step of the optimizer (pipeline.nn.optimizers)

This is that arithmetic (the tests compare it with those functions), with Python's work
per batch kept small, since with small batches it is most of the epoch:
  - the examples are permuted once per epoch into buffers (np.take with out=); a batch
    is a view of them, the same view every epoch;
  - every array a batch writes (A[l], dA[l], the activations' work space) is allocated
    once per batch size (the last batch may be smaller), and dZ[L] = AL - Y is written
    into AL's buffer: a batch allocates no array of its own (numpy's ufuncs still take
    their iteration buffer, at most 64 KB, for each broadcasting operation, b added to Z);
  - the parameters, their gradients and each of the optimizer's moments are each one
    flat vector, the dicts holding views of it (weights first, then biases): an update
    and the L2 term are a few calls for the whole network, not a few per W[l] and b[l];
  - everything is checked once, when the MiniBatchTraining is made, not per batch.
"""

from collections.abc import Mapping

import numpy as np

from pipeline.nn.activations import check_activation
from pipeline.nn.backward import Gradients, LayerGradients, add_l2_gradient, backward_through
from pipeline.nn.cost import check_lambd, check_targets
from pipeline.nn.forward import forward_through, network_layers
from pipeline.nn.initialization import DTYPES, Parameters
from pipeline.nn.minibatches import MiniBatches, Seed
from pipeline.nn.optimizers import (
    DEFAULTS,
    OPTIMIZERS,
    Hyperparameters,
    check_hyperparameters,
    check_optimizer,
    zeros_like_gradients,
)


def pack(arrays: Mapping[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(flat, views): a copy of ``arrays`` back to back in one vector, the weights (W1,
    dW1, ...) first, and {name: its view in flat} in ``arrays``' order."""
    weights_first = sorted(arrays, key=lambda name: "W" not in name)  # W1 or dW1 ...
    first = next(iter(arrays.values()))
    flat = np.empty(sum(array.size for array in arrays.values()), first.dtype)
    views, offset = {}, 0
    for name in weights_first:
        array = arrays[name]
        view = flat[offset : offset + array.size].reshape(array.shape)
        view[...] = array
        views[name] = view
        offset += array.size
    return flat, {name: views[name] for name in arrays}


class Workspace:
    """The arrays a batch of ``size`` examples writes, each layer's of A[l]'s shape."""

    def __init__(self, layer_dims: list[int], size: int, dtype: np.dtype, grads: Gradients):
        L = len(layer_dims) - 1
        self.outs = [np.empty((n, size), dtype) for n in layer_dims[1:]]  # A[1..L]
        self.scratches = [np.empty((n, size), dtype) for n in layer_dims[1:]]
        # layer l's (dA[l-1], dW[l], db[l]); layer 1 needs no dA[0]
        self.grad_outs: list[LayerGradients] = [
            (np.empty_like(self.outs[l - 2]) if l > 1 else None, grads[f"dW{l}"], grads[f"db{l}"])
            for l in range(1, L + 1)
        ]


class MiniBatchTraining:
    """The network, its data in batches and its optimizer's state, between epochs.

    ``parameters`` are copied in: train on ``self.parameters`` (views of one flat vector,
    updated in place by every epoch). ``t`` counts the updates so far.
    """

    def __init__(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        parameters: Parameters,
        *,
        mini_batch_size: int,
        hidden_activation: str = "relu",
        optimizer: str = "adam",
        hyper: Hyperparameters = DEFAULTS,
        lambd: float = 0.0,
    ) -> None:
        check_activation(hidden_activation)
        check_optimizer(optimizer)
        check_hyperparameters(hyper)
        check_lambd(lambd)
        self.theta, self.parameters = pack(parameters)
        dtype = self.theta.dtype
        if dtype.name not in DTYPES:
            raise ValueError(f"parameters must be one of {', '.join(DTYPES)}; got {dtype.name}")
        self.layers = network_layers(self.parameters, hidden_activation)
        layer_dims = [self.layers[0][0].shape[1]] + [W.shape[0] for W, _, _ in self.layers]
        X = np.asarray(X, dtype=dtype)
        if X.ndim != 2 or X.shape[0] != layer_dims[0]:
            raise ValueError(f"X must have shape ({layer_dims[0]}, m); got {X.shape}")
        Y = check_targets(np.empty((layer_dims[-1], X.shape[1]), dtype), Y)
        self.batches = MiniBatches(X, Y, mini_batch_size)

        self.gradient, self.grads = pack(zeros_like_gradients(self.parameters))
        self.optimizer, self.hyper, self.lambd, self.t = OPTIMIZERS[optimizer], hyper, lambd, 0
        # the optimizer's state beside the parameters: {"v": {"dW1": ..., ...}, "s": ...}
        packed = {
            name: pack(zeros_like_gradients(self.parameters)) for name in self.optimizer.moments
        }
        self.moments = {name: views for name, (_, views) in packed.items()}
        self.flat_moments = tuple(flat for flat, _ in packed.values())
        self.scratch = np.empty_like(self.theta)
        n = sum(W.size for W, _, _ in self.layers)  # the weights, packed first
        self.weights = (self.theta[:n], self.gradient[:n], self.scratch[:n])  # for the L2 term
        sizes = {X_t.shape[1] for X_t, _ in self.batches.batches}
        workspaces = {size: Workspace(layer_dims, size, dtype, self.grads) for size in sizes}
        self.plan = [(X_t, Y_t, workspaces[X_t.shape[1]]) for X_t, Y_t in self.batches.batches]


def mini_batch_epoch(training: MiniBatchTraining, learning_rate: float, seed: Seed) -> None:
    """One epoch: every batch of a new order drawn from ``seed``, one update each."""
    training.batches.shuffle(seed)
    theta, gradient, scratch = training.theta, training.gradient, training.scratch
    step, moments, hyper = training.optimizer.step, training.flat_moments, training.hyper
    lambd, (W, dW, W_scratch) = training.lambd, training.weights
    for X_t, Y_t, work in training.plan:
        AL, caches = forward_through(X_t, training.layers, work.outs, work.scratches)
        dZ = np.subtract(AL, Y_t, out=AL)
        backward_through(dZ, caches, work.grad_outs, work.scratches)
        if lambd > 0:
            add_l2_gradient(dW, W, lambd, X_t.shape[1], W_scratch)
        training.t += 1
        step(theta, gradient, moments, training.t, learning_rate, hyper, scratch)
