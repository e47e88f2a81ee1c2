"""The course's optimizers: one update of every W[l] and b[l] from its gradient dW[l], db[l].

Written for one parameter theta (W[l] or b[l]) and its gradient g = dtheta, at step
t = 1, 2, ... (the mini-batches seen so far), with learning rate alpha:

    gd:        theta := theta - alpha g
    momentum:  v := beta v + (1 - beta) g
               theta := theta - alpha v
    adam:      v := beta1 v + (1 - beta1) g                  (first moment)
               s := beta2 s + (1 - beta2) g^2                (second moment)
               v_corrected = v / (1 - beta1^t),  s_corrected = s / (1 - beta2^t)
               theta := theta - alpha v_corrected / (sqrt(s_corrected) + epsilon)
    rmsprop:   Adam's second moment alone (beta1 = 0, so v_corrected = g):
               s := beta2 s + (1 - beta2) g^2
               theta := theta - alpha g / (sqrt(s / (1 - beta2^t)) + epsilon)

v and s start at zero. Adam's update is computed as torch.optim.Adam computes it,
theta -= alpha / (1 - beta1^t) * v / (sqrt(s) / sqrt(1 - beta2^t) + epsilon): epsilon is
added to the square root of the corrected second moment, as in the formula above.
RMSprop keeps the bias correction (torch.optim.RMSprop has none): with beta2 = 0.999,
an uncorrected first step would be 1/sqrt(1 - beta2) ~ 32 times alpha.

Every update works in place on the arrays it is given, through a ``scratch`` array of
theta's shape (allocated per call when not given). The step functions take any arrays,
one layer's or the whole network's packed into one vector (pipeline.nn.epoch): the
arithmetic is elementwise, so both give the same numbers bit for bit.

``OPTIMIZERS`` maps each name to its moments (the state kept beside every parameter, by
the course's names) and its step function, as the activation tables map names.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from pipeline.nn.backward import Gradients
from pipeline.nn.initialization import Parameters

Moments = dict[str, np.ndarray]  # {"dW1": ..., "db1": ...}: one moment, beside each parameter


@dataclass(frozen=True)
class Hyperparameters:
    """The optimizers' settings other than the learning rate; the defaults are the course's."""

    beta: float = 0.9  # momentum
    beta1: float = 0.9  # Adam's first moment
    beta2: float = 0.999  # Adam's and RMSprop's second moment
    epsilon: float = 1e-8


DEFAULTS = Hyperparameters()


def gd_step(theta, grad, moments, t, learning_rate, hyper, scratch=None) -> None:
    """theta -= alpha g."""
    theta -= np.multiply(grad, float(learning_rate), out=scratch)


def momentum_step(theta, grad, moments, t, learning_rate, hyper, scratch=None) -> None:
    """v = beta v + (1 - beta) g; theta -= alpha v. ``moments`` is (v,)."""
    (v,) = moments
    scratch = _scratch(theta, scratch)
    beta = float(hyper.beta)
    v *= beta
    v += np.multiply(grad, 1 - beta, out=scratch)
    theta -= np.multiply(v, float(learning_rate), out=scratch)


def adam_step(theta, grad, moments, t, learning_rate, hyper, scratch=None) -> None:
    """Adam with bias correction at step t >= 1. ``moments`` is (v, s)."""
    v, s = moments
    scratch = _scratch(theta, scratch)
    beta1 = float(hyper.beta1)
    v *= beta1
    v += np.multiply(grad, 1 - beta1, out=scratch)
    _second_moment_step(theta, v, s, grad, t, learning_rate / (1 - beta1**t), hyper, scratch)


def rmsprop_step(theta, grad, moments, t, learning_rate, hyper, scratch=None) -> None:
    """RMSprop (Adam's second moment alone, bias-corrected) at step t >= 1. ``moments`` is (s,)."""
    (s,) = moments
    _second_moment_step(theta, grad, s, grad, t, learning_rate, hyper, _scratch(theta, scratch))


def _second_moment_step(theta, direction, s, grad, t, step_size, hyper, scratch) -> None:
    """s = beta2 s + (1 - beta2) g^2; theta -= step_size direction / (sqrt(s_corrected) + eps)."""
    beta2 = float(hyper.beta2)
    s *= beta2
    np.multiply(grad, grad, out=scratch)
    scratch *= 1 - beta2
    s += scratch
    denominator = np.sqrt(s, out=scratch)
    denominator /= float(np.sqrt(1 - beta2**t))
    denominator += float(hyper.epsilon)
    update = np.divide(direction, denominator, out=scratch)
    update *= float(step_size)
    theta -= update


def _scratch(theta: np.ndarray, scratch: np.ndarray | None) -> np.ndarray:
    return np.empty_like(theta) if scratch is None else scratch


Step = Callable[..., None]


class Optimizer(NamedTuple):
    moments: tuple[str, ...]  # the course's names of the state kept beside each parameter
    step: Step  # step(theta, grad, moments, t, learning_rate, hyper, scratch=None)


OPTIMIZERS: dict[str, Optimizer] = {
    "gd": Optimizer((), gd_step),
    "momentum": Optimizer(("v",), momentum_step),
    "rmsprop": Optimizer(("s",), rmsprop_step),
    "adam": Optimizer(("v", "s"), adam_step),
}


def check_optimizer(name: str) -> None:
    """Raise ValueError unless ``name`` names a known optimizer."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")


def check_hyperparameters(hyper: Hyperparameters) -> None:
    """Raise ValueError unless every beta is in [0, 1) and epsilon is > 0."""
    for name in ("beta", "beta1", "beta2"):
        value = getattr(hyper, name)
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1); got {value!r}")
    if not 0 < hyper.epsilon < np.inf:
        raise ValueError(f"epsilon must be a finite number > 0; got {hyper.epsilon!r}")


def check_step(t: int) -> None:
    """Raise ValueError unless ``t``, the bias correction's step count, is an integer >= 1."""
    if int(t) != t or t < 1:
        raise ValueError(f"t must be an integer >= 1 (the first update is t = 1); got {t!r}")


def zeros_like_gradients(parameters: Parameters) -> Moments:
    """{"dW1": 0, "db1": 0, ...}: one zero array beside each parameter, in its dtype."""
    return {f"d{name}": np.zeros_like(value) for name, value in parameters.items()}


def update_each(
    step: Step,
    parameters: Parameters,
    grads: Gradients,
    moments: tuple[Mapping[str, np.ndarray], ...],
    t: int,
    learning_rate: float,
    hyper: Hyperparameters,
) -> None:
    """``step`` on every parameter, with its gradient and its entry of each moment, once
    ``hyper`` and ``t`` are checked."""
    check_hyperparameters(hyper)
    check_step(t)
    for name, theta in parameters.items():
        key = f"d{name}"
        step(theta, grads[key], tuple(moment[key] for moment in moments), t, learning_rate, hyper)


def initialize_velocity(parameters: Parameters) -> Moments:
    """v = {"dW1": 0, "db1": 0, ...}, momentum's velocity."""
    return zeros_like_gradients(parameters)


def update_parameters_with_momentum(
    parameters: Parameters,
    grads: Gradients,
    v: Moments,
    beta: float,
    learning_rate: float,
) -> tuple[Parameters, Moments]:
    """One momentum step, in place on parameters and v; returns them."""
    hyper = Hyperparameters(beta=beta)
    update_each(momentum_step, parameters, grads, (v,), 1, learning_rate, hyper)  # t unused
    return parameters, v


def initialize_adam(parameters: Parameters) -> tuple[Moments, Moments]:
    """(v, s), Adam's first and second moments, zero beside each parameter."""
    return zeros_like_gradients(parameters), zeros_like_gradients(parameters)


def update_parameters_with_adam(
    parameters: Parameters,
    grads: Gradients,
    v: Moments,
    s: Moments,
    t: int,
    learning_rate: float,
    beta1: float = DEFAULTS.beta1,
    beta2: float = DEFAULTS.beta2,
    epsilon: float = DEFAULTS.epsilon,
) -> tuple[Parameters, Moments, Moments]:
    """One Adam step at step t >= 1, in place on parameters, v and s; returns them.

    (The course's version also returns v_corrected and s_corrected; computing them in
    place avoids two new arrays per parameter and step.)
    """
    hyper = Hyperparameters(beta1=beta1, beta2=beta2, epsilon=epsilon)
    update_each(adam_step, parameters, grads, (v, s), t, learning_rate, hyper)
    return parameters, v, s


def initialize_rmsprop(parameters: Parameters) -> Moments:
    """s = {"dW1": 0, "db1": 0, ...}, RMSprop's second moment."""
    return zeros_like_gradients(parameters)


def update_parameters_with_rmsprop(
    parameters: Parameters,
    grads: Gradients,
    s: Moments,
    t: int,
    learning_rate: float,
    beta2: float = DEFAULTS.beta2,
    epsilon: float = DEFAULTS.epsilon,
) -> tuple[Parameters, Moments]:
    """One RMSprop step at step t >= 1, in place on parameters and s; returns them."""
    hyper = Hyperparameters(beta2=beta2, epsilon=epsilon)
    update_each(rmsprop_step, parameters, grads, (s,), t, learning_rate, hyper)
    return parameters, s
