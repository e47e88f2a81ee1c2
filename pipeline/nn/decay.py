"""Learning-rate decay: the learning rate alpha of epoch 0, 1, 2, ... from alpha0.

    none:          alpha = alpha0
    inverse_time:  alpha = alpha0 / (1 + decay_rate * epoch)      (decay_rate >= 0)
    exponential:   alpha = alpha0 * decay_rate^epoch              (0 < decay_rate <= 1)

Both decays are the course's: the first is its formula, the second its "exponential
decay" example alpha = 0.95^epoch_num * alpha0, with 0.95 as decay_rate. So decay_rate
is a rate for inverse_time (0 keeps alpha0) and a base for exponential (1 keeps alpha0).
Epoch 0 always trains with alpha0. ``LR_DECAYS`` maps each name to its function.
"""

import math
from collections.abc import Callable


def no_decay(learning_rate0: float, epoch: int, decay_rate: float) -> float:
    """alpha0, whatever the epoch."""
    return float(learning_rate0)


def inverse_time_decay(learning_rate0: float, epoch: int, decay_rate: float) -> float:
    """alpha0 / (1 + decay_rate * epoch)."""
    return float(learning_rate0) / (1 + float(decay_rate) * epoch)


def exponential_decay(learning_rate0: float, epoch: int, decay_rate: float) -> float:
    """alpha0 * decay_rate^epoch."""
    return float(learning_rate0) * float(decay_rate) ** epoch


Decay = Callable[[float, int, float], float]

LR_DECAYS: dict[str, Decay] = {
    "none": no_decay,
    "inverse_time": inverse_time_decay,
    "exponential": exponential_decay,
}

# name -> (is decay_rate valid, what it must be)
_VALID_RATES: dict[str, tuple[Callable[[float], bool], str]] = {
    "none": (lambda rate: True, "anything"),
    "inverse_time": (lambda rate: 0 <= rate < math.inf, "a finite number >= 0"),
    "exponential": (lambda rate: 0 < rate <= 1, "in (0, 1]"),
}


def check_lr_decay(name: str, decay_rate: float) -> None:
    """Raise ValueError unless ``name`` is a known decay and ``decay_rate`` suits it."""
    if name not in LR_DECAYS:
        raise ValueError(f"lr_decay must be one of {', '.join(LR_DECAYS)}; got {name!r}")
    valid, what = _VALID_RATES[name]
    if not valid(decay_rate):
        raise ValueError(f"decay_rate must be {what} for lr_decay {name}; got {decay_rate!r}")
