"""The run configuration, a frozen dataclass that checks itself when built; every field is
recorded in the bundle manifest and in the bundle's fingerprint."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from contract.errors import ConfigError

from .models import registry

DEVICES = ("cpu", "cuda")
"""Where torch may train."""


def _default_models() -> tuple[str, ...]:
    return registry.names()


def _default_model_configs() -> dict[str, Any]:
    return {name: registry.get(name).default_config() for name in registry.names()}


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a trained bundle besides the data."""

    seed: int = 42
    """The one seed; numpy and torch generators are derived from it (``child_seed``)."""
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Train / validation / test fractions when a single ratings file is split."""
    validation_fraction: float = 0.1
    """Share of an explicit training file held out for early stopping."""
    models: tuple[str, ...] = field(default_factory=_default_models)
    """Which model families to train and export, by registered name."""
    device: str = "cpu"
    """Where torch trains: "cpu" or "cuda" (export, parity and scoring inputs stay on the CPU)."""
    model_configs: Mapping[str, Any] = field(default_factory=_default_model_configs)
    """Each family's settings, by name (the family's ``config_type``); defaults for any not given."""

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ConfigError(f"device: expected one of {list(DEVICES)}, got {self.device!r}")
        if len(self.split) != 3 or min(self.split) < 0 or not np.isclose(sum(self.split), 1.0):
            raise ConfigError(f"split: expected three non-negative fractions that sum to 1, got {self.split}")
        if not 0 <= self.validation_fraction < 1:
            raise ConfigError(f"validation_fraction: expected a fraction in [0, 1), got {self.validation_fraction}")
        if not self.models:
            raise ConfigError("models: expected at least one model family")
        configs = dict(self.model_configs)
        for name in self.models:
            family = registry.get(name)
            configs.setdefault(name, family.default_config())
            if not isinstance(configs[name], family.config_type):
                raise ConfigError(f"model '{name}': expected a {family.config_type.__name__}, "
                                  f"got {type(configs[name]).__name__}")
        object.__setattr__(self, "model_configs", {name: configs[name] for name in self.models})

    def model_config(self, name: str) -> Any:
        """The settings of model ``name``."""
        return self.model_configs[name]

    def replace_model(self, name: str, **changes: Any) -> "RunConfig":
        """A copy with model ``name``'s settings changed."""
        configs = dict(self.model_configs)
        configs[name] = dataclasses.replace(configs[name], **changes)
        return dataclasses.replace(self, model_configs=configs)

    def replace_training(self, **changes: Any) -> "RunConfig":
        """A copy with every model's training settings changed alike."""
        configs = {name: registry.get(name).with_training(c, **changes) for name, c in self.model_configs.items()}
        return dataclasses.replace(self, model_configs=configs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def child_seed(seed: int, purpose: str) -> int:
    """An independent seed for one purpose ("split", "parity", or a model's name), derived from
    the one seed: the same purpose always gets the same child, whatever else the run contains."""
    key = int.from_bytes(purpose.encode(), "little")
    return int(np.random.SeedSequence(seed, spawn_key=(key,)).generate_state(1, dtype=np.uint32)[0])


PARITY_SAMPLE_PAIRS = 10_000
"""Minimum number of (user, item) pairs per model in the parity sample."""

PARITY_MAX_TEST_PAIRS = 100_000
"""At most this many test pairs (a seeded sample) in the parity sample: every test pair of a
MovieLens 1M-sized set, while export of a 20M-rating catalogue does not score every user twice."""

PARITY_MAX_USERS = 5_000
"""At most this many users (a seeded sample) in the parity sample: the all-items graphs score
every item for each of them, so this bounds export's parity work on large catalogues."""

PARITY_FULL_USERS = 5
"""Users whose every item is in the parity sample."""

ONNX_OPSET = 17
"""Opset of the exported graphs."""
