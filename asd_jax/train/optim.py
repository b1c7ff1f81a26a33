"""The optimiser, built once from a method's ``train`` config and carried by the training state.

A config names the optimiser's *structure* (``optimizer``: adam, adamw or sgd; ``schedule``: constant or
warmup_cosine) and its *values* (``learning_rate``, ``weight_decay``, ``grad_clip_norm``, ``momentum``,
``warmup_epochs``). The structure is static: every member of one compiled program shares it. The values are
shape-free, so each ensemble member carries its own as arrays in its state (:data:`HYPERPARAMETERS`) and one
program trains members with different learning rates, weight decays or clip norms side by side.

Every setting is read: a value the chosen structure would ignore (``momentum`` for adam, ``weight_decay`` for adam,
``warmup_epochs`` with a constant schedule) is refused by :func:`check` instead of silently doing nothing.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "warmup_cosine")
SGD_DEFAULT_MOMENTUM = 0.9
# the per-member (shape-free) values, in the order they are stored
HYPERPARAMETERS = ("learning_rate", "weight_decay", "grad_clip_norm", "momentum", "warmup_epochs")


def check(train, where: str = "train") -> None:
    """Refuse settings that the chosen optimiser or schedule would not read; ``where`` names the section."""
    if train.optimizer not in OPTIMIZERS:
        raise ValueError(f"{where}.optimizer={train.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    if train.schedule not in SCHEDULES:
        raise ValueError(f"{where}.schedule={train.schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if not float(train.learning_rate) > 0:
        raise ValueError(f"{where}.learning_rate must be > 0; got {train.learning_rate}")
    if train.weight_decay and train.optimizer == "adam":
        raise ValueError(f"{where}.weight_decay={train.weight_decay} is not read by optimizer=adam "
                         f"(Adam has no decoupled weight decay): set {where}.optimizer=adamw")
    if train.momentum is not None and train.optimizer != "sgd":
        raise ValueError(f"{where}.momentum is read by optimizer=sgd only (got optimizer={train.optimizer})")
    if train.warmup_epochs and train.schedule == "constant":
        raise ValueError(f"{where}.warmup_epochs={train.warmup_epochs} is not read by schedule=constant: "
                         f"set {where}.schedule=warmup_cosine")
    if train.grad_clip_norm < 0 or train.weight_decay < 0 or train.warmup_epochs < 0:
        raise ValueError(f"{where}: grad_clip_norm, weight_decay and warmup_epochs must be >= 0")


def hyperparameters(train) -> dict[str, float]:
    """The per-member values of a ``train`` config section (``momentum`` resolved to its sgd default)."""
    values = {name: train[name] for name in HYPERPARAMETERS}
    if values["momentum"] is None:
        values["momentum"] = SGD_DEFAULT_MOMENTUM if train.optimizer == "sgd" else 0.0
    return {name: float(value) for name, value in values.items()}


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """The static part of the optimiser; :meth:`transform` binds a member's values (traced arrays under vmap).

    ``steps_per_epoch`` converts ``warmup_epochs`` to steps; ``total_steps`` is where the cosine reaches 0.
    """

    kind: str = "adam"
    schedule: str = "constant"
    steps_per_epoch: int = 1
    total_steps: int = 1

    @classmethod
    def from_config(cls, train, steps_per_epoch: int) -> "Optimizer":
        check(train)
        return cls(train.optimizer, train.schedule, steps_per_epoch, steps_per_epoch * int(train.epochs))

    def transform(self, hparams: dict) -> optax.GradientTransformation:
        """clip (when ``grad_clip_norm`` > 0) -> adam | adam + decoupled decay | L2 + momentum -> -lr * schedule."""
        steps = [clip_by_global_norm_if_positive(hparams["grad_clip_norm"])]
        if self.kind == "adam":
            steps.append(optax.scale_by_adam())
        elif self.kind == "adamw":
            steps += [optax.scale_by_adam(), optax.add_decayed_weights(hparams["weight_decay"])]
        elif self.kind == "sgd":
            steps += [optax.add_decayed_weights(hparams["weight_decay"]), optax.trace(decay=hparams["momentum"])]
        else:
            raise ValueError(f"unknown optimizer {self.kind!r}; choose one of {', '.join(OPTIMIZERS)}")
        rate = hparams["learning_rate"]
        warmup = hparams["warmup_epochs"] * self.steps_per_epoch
        steps.append(optax.scale_by_schedule(lambda count: -rate * self.factor(count, warmup)))
        return optax.chain(*steps)

    def factor(self, count, warmup_steps):
        """The schedule's multiplier of the learning rate at optimiser step ``count`` (0-based)."""
        if self.schedule == "constant":
            return 1.0
        count = jnp.asarray(count, jnp.float32)
        warm = jnp.where(warmup_steps > 0, jnp.minimum(1.0, (count + 1.0) / jnp.maximum(warmup_steps, 1.0)), 1.0)
        progress = jnp.clip((count - warmup_steps) / jnp.maximum(self.total_steps - warmup_steps, 1.0), 0.0, 1.0)
        return warm * 0.5 * (1.0 + jnp.cos(math.pi * progress))

    def init(self, params, hparams: dict):
        return self.transform(hparams).init(params)

    def update(self, grads, opt_state, params, hparams: dict):
        return self.transform(hparams).update(grads, opt_state, params)


def clip_by_global_norm_if_positive(max_norm) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm`` whose bound may be a traced per-member value; a bound <= 0 leaves the gradients
    exactly as they are (scaled by 1.0)."""

    def update(updates, state, params=None):
        del params
        norm = optax.tree.norm(updates)
        scale = jnp.where((max_norm > 0) & (norm > max_norm), max_norm / jnp.maximum(norm, 1e-30), 1.0)
        return jax.tree.map(lambda g: g * scale.astype(g.dtype), updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
