"""Gradient checking: backpropagation's gradients against centred differences, layer by layer.

For each checked coordinate theta_i of W[l] and b[l] (all of them, or a seeded sample of
MAX_COORDINATES when the array is bigger), the cost J is evaluated on either side of it:

    g~_i = (J(theta + eps e_i) - J(theta - eps e_i)) / (2 eps),        eps = 1e-7

and compared with backpropagation's g_i at the same coordinates, per array, by the
course's relative difference, in float64:

    difference = ||g - g~||_2 / (||g||_2 + ||g~||_2)

An array passes below 2e-7. Two things make a right backward pass differ by more, and
each is explained, and ruled out, by checking the layer again:

- ReLU's kink. Where a perturbation moves a pre-activation across 0 (relu, leaky_relu),
  J has no derivative and g~ averages the slopes on either side. The examples where a
  hidden unit is on one side of 0 under +eps and on the other under -eps are left out,
  and the layer is checked again on the others.
- Round-off. J is a float64, known to its spacing (about 1e-16 for J near 1), so each
  g~_i is known to about spacing(J) / (2 eps), 5e-10 at eps = 1e-7, whatever the
  gradient's size. A layer whose gradients are small (the vanishing gradients of a deep
  sigmoid network) differs by more than 2e-7 from that alone: its error ||g - g~|| is
  within ROUNDOFF_MARGIN times sqrt(n) spacing(J) / (2 eps) over n coordinates. It is
  checked again with eps = 1e-5: 100 times less round-off, and a truncation error (of
  order eps^2) still far below the threshold. If round-off still exceeds the threshold
  there, the layer's gradients are too small to check in float64, and the verdict says so.

A wrong backward pass differs by the same relative amount at any eps and on any examples,
and by more than round-off: it fails, and the verdict names the deepest layer it reaches
(backpropagation carries an error down to the layers below it).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from pipeline.nn.backward import Gradients, L_model_backward
from pipeline.nn.cost import compute_cost
from pipeline.nn.forward import Cache, L_model_forward
from pipeline.nn.initialization import Parameters, n_layers

EPSILON = 1e-7  # the course's perturbation
THRESHOLD = 2e-7  # the course's bound on the relative difference
ROUNDOFF_EPSILON = 1e-5  # the re-check of a layer whose difference is round-off
ROUNDOFF_MARGIN = 4  # an error up to this many times J's resolution is round-off
MAX_COORDINATES = 200  # checked per array: a seeded sample of bigger ones
KINKED = ("relu", "leaky_relu")  # hidden activations whose derivative jumps at 0

Backward = Callable[[np.ndarray, np.ndarray, list[Cache]], Gradients]


@dataclass(frozen=True)
class Measurement:
    """One comparison of a layer's dW and db with centred differences."""

    epsilon: float
    n_examples: int
    dW: float  # the relative difference over dW's checked coordinates
    db: float
    error: float  # ||g - g~||_2 over dW's and db's checked coordinates together
    n_coordinates: int  # checked in dW and db together
    cost: float  # J on these examples
    kinked: np.ndarray  # (n_examples,) bool: a perturbation crossed a kink at that example

    @property
    def passed(self) -> bool:
        return max(self.dW, self.db) < THRESHOLD

    @property
    def roundoff(self) -> bool:
        """Whether the error is no more than round-off's: J's resolution (its float64
        spacing) over 2 eps per coordinate, within ROUNDOFF_MARGIN."""
        resolution = np.spacing(self.cost) * np.sqrt(self.n_coordinates) / (2 * self.epsilon)
        return self.error <= ROUNDOFF_MARGIN * resolution


@dataclass(frozen=True)
class LayerCheck:
    """A layer's check: the course's measurement first, then the re-checks, if any."""

    layer: int
    checked: Mapping[str, tuple[int, int]]  # "dW1" -> (coordinates checked, array size)
    grad_norm: float  # ||dW[l]||, over the whole batch
    measurements: list[Measurement]

    @property
    def passed(self) -> bool:
        return self.measurements[-1].passed

    @property
    def kinked_examples(self) -> int:
        """How many examples were left out because a perturbation crossed a kink there."""
        return self.measurements[0].n_examples - self.measurements[-1].n_examples

    @property
    def rechecked_at(self) -> float | None:
        """The larger eps the layer was checked again with (round-off), if it was."""
        last = self.measurements[-1].epsilon
        return last if last != self.measurements[0].epsilon else None


@dataclass
class Problem:
    """What is checked: float64 copies, whose parameters are perturbed one coordinate at a time."""

    parameters: Parameters
    X: np.ndarray
    Y: np.ndarray
    hidden_activation: str
    backward: Backward


def gradient_check_n(
    parameters: Mapping[str, np.ndarray],
    X: np.ndarray,
    Y: np.ndarray,
    *,
    hidden_activation: str = "relu",
    backward: Backward = L_model_backward,
    epsilon: float = EPSILON,
    max_coordinates: int = MAX_COORDINATES,
    seed: int = 0,
) -> list[LayerCheck]:
    """Check ``backward``'s gradients of the cost of (X, Y) at ``parameters`` against
    centred differences, layer by layer, in float64 (the arrays given are left as they are).
    """
    problem = Problem(
        {name: np.array(value, dtype=np.float64) for name, value in parameters.items()},
        np.asarray(X, dtype=np.float64),
        np.asarray(Y, dtype=np.float64),
        hidden_activation,
        backward,
    )
    coordinates = sample_coordinates(problem.parameters, max_coordinates, seed)
    AL, caches = L_model_forward(problem.X, problem.parameters, hidden_activation=hidden_activation)
    grads = backward(AL, problem.Y, caches)
    checks = []
    for l in range(1, n_layers(problem.parameters) + 1):
        checked = {
            f"d{name}": (coordinates[name].size, problem.parameters[name].size)
            for name in (f"W{l}", f"b{l}")
        }
        grad_norm = float(np.linalg.norm(grads[f"dW{l}"]))
        checks.append(
            LayerCheck(l, checked, grad_norm, check_layer(problem, l, coordinates, epsilon))
        )
    return checks


def sample_coordinates(
    parameters: Parameters, max_coordinates: int, seed: int
) -> dict[str, np.ndarray]:
    """The flat indices checked in each array: all of them, or ``max_coordinates`` drawn
    without replacement by a generator seeded with ``seed``."""
    rng = np.random.default_rng(seed)
    return {
        name: np.arange(value.size)
        if value.size <= max_coordinates
        else np.sort(rng.choice(value.size, max_coordinates, replace=False))
        for name, value in parameters.items()
    }


def check_layer(
    problem: Problem, l: int, coordinates: Mapping[str, np.ndarray], epsilon: float
) -> list[Measurement]:
    """The course's measurement of layer ``l``; while it fails, again without the examples
    at a kink; then, if it fails by round-off, again with ROUNDOFF_EPSILON."""
    examples = np.arange(problem.X.shape[1])
    measurements: list[Measurement] = []
    for eps in dict.fromkeys((epsilon, ROUNDOFF_EPSILON)):
        measurement = measure(problem, l, coordinates, eps, examples)
        measurements.append(measurement)
        while not measurement.passed and 0 < measurement.kinked.sum() < examples.size:
            examples = examples[~measurement.kinked]
            measurement = measure(problem, l, coordinates, eps, examples)
            measurements.append(measurement)
        if measurement.passed or not measurement.roundoff:
            break
    return measurements


def measure(
    problem: Problem,
    l: int,
    coordinates: Mapping[str, np.ndarray],
    epsilon: float,
    examples: np.ndarray,
) -> Measurement:
    """Layer ``l``'s relative differences on ``examples`` with perturbations of ``epsilon``."""
    X, Y = problem.X[:, examples], problem.Y[:, examples]
    parameters, activation = problem.parameters, problem.hidden_activation
    AL, caches = L_model_forward(X, parameters, hidden_activation=activation)
    cost = compute_cost(AL, Y)
    grads = problem.backward(AL, Y, caches)
    kinked = np.zeros(examples.size, dtype=bool)

    def cost_and_signs() -> tuple[float, list[np.ndarray]]:
        AL, caches = L_model_forward(X, parameters, hidden_activation=activation)
        signs = [c.activation_cache.A > 0 for c in caches[:-1]] if activation in KINKED else []
        return compute_cost(AL, Y), signs

    differences, errors = {}, []
    for name in (f"W{l}", f"b{l}"):
        flat = parameters[name].reshape(-1)  # a view: setting it perturbs the network
        index = coordinates[name]
        approx = np.empty(index.size)
        for n, i in enumerate(index):
            original = flat[i]
            flat[i] = original + epsilon
            J_plus, signs_plus = cost_and_signs()
            flat[i] = original - epsilon
            J_minus, signs_minus = cost_and_signs()
            flat[i] = original
            approx[n] = (J_plus - J_minus) / (2 * epsilon)
            for plus, minus in zip(signs_plus, signs_minus, strict=True):
                kinked |= (plus != minus).any(axis=0)
        grad = grads[f"d{name}"].reshape(-1)[index]
        differences[name] = relative_difference(grad, approx)
        errors.append(np.linalg.norm(grad - approx))
    return Measurement(
        epsilon,
        examples.size,
        differences[f"W{l}"],
        differences[f"b{l}"],
        float(np.hypot(*errors)),
        sum(coordinates[name].size for name in (f"W{l}", f"b{l}")),
        cost,
        kinked,
    )


def relative_difference(grad: np.ndarray, approx: np.ndarray) -> float:
    """||grad - approx|| / (||grad|| + ||approx||); 0 when both are 0 (dead units)."""
    denominator = np.linalg.norm(grad) + np.linalg.norm(approx)
    return float(np.linalg.norm(grad - approx) / denominator) if denominator else 0.0


def layer_line(check: LayerCheck) -> str:
    """One line: the layer's differences, how many coordinates were checked, its gradient's
    norm, ok or FAIL, and what checking it again found."""
    l, first, last = check.layer, check.measurements[0], check.measurements[-1]

    def counted(name: str) -> str:
        checked, size = check.checked[name]
        return f"(all {size})" if checked == size else f"({checked} of {size})"

    line = (
        f"layer {l}  dW{l} {first.dW:.1e} {counted(f'dW{l}'):<13} "
        f"db{l} {first.db:.1e} {counted(f'db{l}'):<10} "
        f"|dW{l}| {check.grad_norm:.1e}  {'ok' if check.passed else 'FAIL'}"
    )
    if len(check.measurements) == 1:
        return line
    causes, again = [], []
    if check.kinked_examples:
        causes.append(
            f"{check.kinked_examples} of {first.n_examples} examples cross ReLU's kink at +-eps"
        )
        again.append("without them")
    if check.rechecked_at:
        causes.append(f"round-off: too small for eps={first.epsilon:g}")
    if check.rechecked_at:
        again.append(f"at eps={check.rechecked_at:g}")
    found = f"{' and '.join(again)}: dW{l} {last.dW:.1e} db{l} {last.db:.1e}"
    return f"{line}: {', '.join(causes) or 'checked again'}; {found}"


def verdict(checks: list[LayerCheck]) -> str:
    """The last line: passed, or failed naming the deepest layer whose gradients are wrong
    (backpropagation carries its error down to the layers below it), else the layers whose
    gradients are too small to check."""
    failed = [check for check in reversed(checks) if not check.passed]
    if not failed:
        again = [str(check.layer) for check in checks if len(check.measurements) > 1]
        explained = f" (layer {', '.join(again)} once checked again)" if again else ""
        return f"passed: every layer's difference is below {THRESHOLD:g}{explained}"
    wrong = [check for check in failed if not check.measurements[-1].roundoff]
    if not wrong:
        layers = ", ".join(str(check.layer) for check in failed)
        return (
            f"FAILED: layer {layers}: gradients too small to check by centred differences in "
            f"float64 (round-off even at eps={ROUNDOFF_EPSILON:g}, as their lines say)"
        )
    deepest, l = wrong[0], wrong[0].layer
    last = deepest.measurements[-1]
    below = ", ".join(str(check.layer) for check in failed if check.layer < l)
    inherit = f"; layer {below} below it may only inherit its error" if below else ""
    return (
        f"FAILED: layer {l}'s gradients differ from centred differences (dW{l} {last.dW:.1e}, "
        f"db{l} {last.db:.1e}, above {THRESHOLD:g}): look at its backward step{inherit}"
    )
