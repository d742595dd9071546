"""A data holder in a federation: trains the global model on its own rows, sends parameters.

The rows never leave the client. What leaves is a :class:`ClientUpdate`: the parameters
after local training and the number of rows they were trained on.

>>> client = FederatedClient("hospital_1", X_local, y_local)      # doctest: +SKIP
>>> client.receive_global_model(server.get_global_model())        # doctest: +SKIP
>>> update = client.train_local(epochs=5)                          # doctest: +SKIP
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from fedge.errors import InvalidInputError
from fedge.federated.messages import ClientUpdate, FitInstructions, Parameters
from fedge.federated.training import (
    LocalData,
    ModelSpec,
    TrainingConfig,
    dp_schedule,
    init_parameters,
    parameters_from_estimator,
    prepare_data,
    spec_from_estimator,
    train_prepared,
)

__all__ = ["FederatedClient", "client_rng", "initial_parameters"]

# FitInstructions.config keys a server may set; each overrides the client's TrainingConfig.
TRAINING_KEYS = (
    "epochs",
    "batch_size",
    "learning_rate",
    "optimizer",
    "momentum",
    "proximal_mu",
    "dp_clip_norm",
    "dp_noise_multiplier",
)
# Record-level DP with a budget: the client calibrates its own noise multiplier from these.
CALIBRATION_KEYS = ("dp_target_epsilon", "dp_delta", "dp_rounds", "dp_accountant")


def client_rng(seed: int, server_round: int, client_id: str) -> np.random.Generator:
    """The generator a client uses in one round: a function of (seed, round, client id) only.

    Deriving it this way, instead of drawing from a long-lived stream, makes a run resumed
    from a checkpoint train exactly as the uninterrupted run would have. Philox is keyed
    directly (a distinct 128-bit key per seed, round and client), which costs half of
    hashing a seed sequence: it matters with thousands of clients per round.
    """
    key = ((seed % 2**64) << 64) | ((server_round % 2**32) << 32) | zlib.crc32(client_id.encode())
    return np.random.Generator(np.random.Philox(key=key))


def initial_parameters(estimator: Any, spec: ModelSpec) -> Parameters:
    """The parameters a federation starts from: a fitted estimator's, or a seeded init.

    An unfitted estimator is initialised from its ``random_state`` (0 when unset), so the
    server and every client that starts from it hold identical parameters.
    """
    if hasattr(estimator, "n_features_in_"):
        return parameters_from_estimator(estimator, spec)
    seed = estimator.get_params().get("random_state")
    return init_parameters(spec, np.random.default_rng(seed if isinstance(seed, int) else 0))


def _finite_matrix(X: Any, y: Any, client_id: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInputError(f"client {client_id!r}: X must be numeric") from None
    y = np.asarray(y)
    if X.ndim != 2 or len(X) == 0:
        raise InvalidInputError(
            f"client {client_id!r}: X must be a non-empty 2-D array, got shape {X.shape}"
        )
    if y.shape != (len(X),):
        raise InvalidInputError(
            f"client {client_id!r}: y has shape {y.shape} for {len(X)} rows of X"
        )
    if not np.isfinite(X).all():
        raise InvalidInputError(
            f"client {client_id!r}: X holds NaN or Inf; impute or drop those rows first"
        )
    return X, y


class FederatedClient:
    """One data holder: its rows, its training settings, and the model it last received.

    Parameters
    ----------
    client_id : str
        The name the server knows this client by.
    X, y : array-like
        The local rows and targets (never sent anywhere).
    training : TrainingConfig, optional
        Local training settings; the server may override some per round
        (e.g. ``proximal_mu`` under FedProx, DP-SGD clipping under record-level privacy).
    random_state : int
        Seed of the client's local randomness (mini-batch order, DP noise), mixed with the
        round number and client id.
    """

    def __init__(
        self,
        client_id: str,
        X: Any,
        y: Any,
        *,
        training: TrainingConfig | None = None,
        random_state: int = 0,
    ) -> None:
        if not isinstance(client_id, str) or not client_id:
            raise InvalidInputError("client_id must be a non-empty string")
        self.client_id = client_id
        self.X, self.y = _finite_matrix(X, y, client_id)
        self.training = training if training is not None else TrainingConfig()
        self.random_state = random_state
        self.spec: ModelSpec | None = None
        self._parameters: Parameters | None = None
        self._round = 0
        self._noise_cache: dict[tuple, float] = {}
        self._data: LocalData | None = None  # rows checked and targets encoded, per spec

    @property
    def num_examples(self) -> int:
        """Number of local rows."""
        return len(self.X)

    # -- the seed API -------------------------------------------------------------------
    def receive_global_model(self, model: Any, *, server_round: int | None = None) -> None:
        """Take the server's global estimator as the starting point of local training.

        An unfitted estimator (the very first round, when the server does not yet know the
        feature count) is initialised here exactly as every other client initialises it:
        from the estimator's ``random_state`` (0 when unset).
        """
        classes = getattr(model, "classes_", getattr(model, "fedge_classes_", None))
        spec = spec_from_estimator(model, n_features=self.X.shape[1], classes=classes)
        self._parameters = initial_parameters(model, spec)
        self.spec = spec
        self._round = server_round if server_round is not None else getattr(
            model, "fedge_round_", self._round + 1
        )

    def train_local(self, epochs: int | None = None, **overrides: Any) -> ClientUpdate:
        """Train the received model on the local rows and return the update to send.

        ``epochs`` and other :class:`TrainingConfig` fields given here override the
        client's defaults for this call.
        """
        if self.spec is None or self._parameters is None:
            raise InvalidInputError(
                f"client {self.client_id!r} has no model: call receive_global_model first"
            )
        if epochs is not None:
            overrides["epochs"] = epochs
        instructions = FitInstructions(self._round, self._parameters, overrides)
        return self.fit(instructions, self.spec)

    # -- the transport entry point ------------------------------------------------------
    def fit(self, instructions: FitInstructions, spec: ModelSpec) -> ClientUpdate:
        """Train from ``instructions`` (global parameters and round settings); the update."""
        config = self._config_for(instructions.config)
        rng = client_rng(self.random_state, instructions.round, self.client_id)
        if self._data is None or self._data.spec is not spec:
            self._data = prepare_data(spec, self.X, self.y)
        result = train_prepared(
            spec,
            instructions.parameters,
            self._data,
            config,
            rng,
            global_parameters=instructions.parameters,
        )
        metrics = {
            "loss_before": float(result.loss_before),
            "loss_after": float(result.loss_after),
            "steps": float(result.steps),
            "sampling_rate": float(result.sampling_rate),
            "noise_multiplier": float(result.noise_multiplier),
        }
        return ClientUpdate(
            client_id=self.client_id,
            round=instructions.round,
            parameters=result.parameters,
            num_examples=int(result.num_examples),
            metrics=metrics,
        )

    def _config_for(self, overrides: Mapping[str, Any]) -> TrainingConfig:
        overrides = dict(overrides)
        budget = {k: overrides.pop(k) for k in CALIBRATION_KEYS if k in overrides}
        unknown = set(overrides) - set(TRAINING_KEYS)
        if unknown:
            raise InvalidInputError(
                f"unknown training settings {sorted(unknown)}; known: {list(TRAINING_KEYS)}"
            )
        config = replace(self.training, **overrides) if overrides else self.training
        if budget:
            noise = self._calibrated_noise(config, **budget)
            config = replace(config, dp_noise_multiplier=noise)
        return config

    def _calibrated_noise(
        self,
        config: TrainingConfig,
        *,
        dp_target_epsilon: float,
        dp_delta: float,
        dp_rounds: int,
        dp_accountant: str = "rdp",
    ) -> float:
        """The smallest noise multiplier with which ``dp_rounds`` rounds of this client's
        DP-SGD spend at most ``dp_target_epsilon`` (computed once per setting)."""
        from fedge.federated.privacy import noise_multiplier_for

        rate, steps = dp_schedule(self.num_examples, config)
        key = (dp_target_epsilon, dp_delta, dp_rounds, dp_accountant, rate, steps)
        if key not in self._noise_cache:
            self._noise_cache[key] = noise_multiplier_for(
                dp_target_epsilon, dp_delta, sampling_rate=rate, steps=dp_rounds * steps,
                method=dp_accountant,
            )
        return self._noise_cache[key]

    def __repr__(self) -> str:
        return f"FederatedClient({self.client_id!r}, rows={self.num_examples})"
