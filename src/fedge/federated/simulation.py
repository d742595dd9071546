"""In-process federations: one dataset split among simulated clients, trained round by round.

>>> result = simulate(LogisticRegression(), X, y, n_clients=10,          # doctest: +SKIP
...                   partition="dirichlet:0.5", rounds=50)
>>> result.model          # a fitted scikit-learn estimator               # doctest: +SKIP
>>> result.history.metric("accuracy")                                    # doctest: +SKIP

The same server, clients and strategies run here as across machines; only the transport
differs. Runs are deterministic for a ``random_state``, and faults (clients that raise,
hang, drop out or attack) can be injected with a :class:`FaultPlan`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedge.errors import InvalidInputError
from fedge.federated.client import FederatedClient
from fedge.federated.history import EarlyStopping, History, RoundRecord
from fedge.federated.partitioning import partition as partition_rows
from fedge.federated.preprocessing import (
    client_moments,
    scaler_from_bounds,
    scaler_from_moments,
)
from fedge.federated.privacy_config import DifferentialPrivacy, calibrate_privacy
from fedge.federated.secure import SecureAggregation
from fedge.federated.server import FederatedServer
from fedge.federated.strategies import AggregationStrategy, Strategy
from fedge.federated.training import TrainingConfig
from fedge.federated.transport import FaultPlan, InProcessTransport

__all__ = ["SimulationResult", "simulate"]


@dataclass
class SimulationResult:
    """The trained model, what happened each round, and how the data was split."""

    model: Any  # the global estimator; a Pipeline(scaler, estimator) with standardize=True
    history: History
    server: FederatedServer = field(repr=False)
    client_sizes: list[int] = field(default_factory=list)
    clients: list[FederatedClient] = field(default_factory=list, repr=False)

    @property
    def epsilon(self) -> float | None:
        """Privacy spent (None without differential privacy)."""
        return self.server.epsilon


def _validation_split(
    X: np.ndarray, y: np.ndarray, fraction: float, classify: bool, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    if not 0 < fraction < 1:
        raise InvalidInputError(f"validation fraction must be in (0, 1), got {fraction}")
    return train_test_split(
        X, y, test_size=fraction, random_state=seed, stratify=y if classify else None
    )


def simulate(
    model: Any,
    X: Any,
    y: Any,
    *,
    n_clients: int = 10,
    partition: str = "iid",
    groups: Sequence | np.ndarray | None = None,
    rounds: int = 10,
    strategy: AggregationStrategy | str | Strategy = AggregationStrategy.FED_AVG,
    strategy_options: dict[str, Any] | None = None,
    fraction_fit: float = 1.0,
    min_fit_clients: int = 1,
    training: TrainingConfig | None = None,
    classes: Sequence | np.ndarray | None = None,
    validation: float | tuple[Any, Any] | None = None,
    privacy: DifferentialPrivacy | None = None,
    faults: FaultPlan | None = None,
    timeout: float | None = None,
    max_update_norm: float | None = None,
    early_stopping: EarlyStopping | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    standardize: bool = False,
    feature_range: tuple[Any, Any] | None = None,
    secure_aggregation: SecureAggregation | str | None = None,
    random_state: int = 0,
    progress: bool = True,
) -> SimulationResult:
    """Federate ``model`` over ``X, y`` split among ``n_clients`` simulated clients.

    Parameters
    ----------
    model : scikit-learn estimator
        The initial model (see :class:`FederatedServer` for the supported kinds).
    X, y : array-like
        All rows; they are partitioned, and each client only ever sees its part.
    n_clients : int
        Number of clients (2 to 10,000 and more; with ``partition="group"`` one per group).
    partition : str
        ``"iid"``, ``"dirichlet:ALPHA"``, ``"quantity:ALPHA"`` or ``"group"``.
    rounds : int
        Rounds to run (fewer if early stopping or the privacy budget ends the run).
    strategy, strategy_options, fraction_fit, min_fit_clients
        The aggregation strategy, its options and client selection per round.
    training : TrainingConfig
        Local training settings (epochs, batch size, learning rate, optimizer...).
    classes : array-like, optional
        The label set; by default the labels present in ``y``.
    validation : float or (X_val, y_val), optional
        A fraction of rows held out at the server (stratified), or explicit data, scored
        after every round.
    privacy : DifferentialPrivacy, optional
        With a ``target_epsilon`` and no noise multiplier, the noise is calibrated so the
        planned rounds spend the budget: at client level by the server, for the fraction
        of clients per round; at record level by every client, for its own size.
    faults : FaultPlan, optional
        Injected failures, hangs (need ``timeout``), drop-outs and attackers.
    checkpoint_dir, resume
        Save after every round; resume from the saved round.
    standardize : bool
        Standardize features with a scaler built from the clients' summed moments
        (:mod:`fedge.federated.preprocessing`); the result is then a pipeline. The exact
        moments are outside any privacy budget, so this is refused with ``privacy``.
    feature_range : (lower, upper), optional
        Public per-feature bounds: features are scaled from them onto [-1, 1] without looking
        at any client's data (no privacy cost); the result is then a pipeline.
    secure_aggregation : SecureAggregation or str, optional
        ``"secagg"``, ``"secagg+"``, ``"ckks"`` or ``"paillier"``: the server learns only the
        sum of the clients' clipped updates (see :mod:`fedge.federated.secure`).
    random_state : int
        Seeds the partition, client selection, local training and noise.
    progress : bool
        Show a progress bar with the round's metric and epsilon.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or len(X) != len(y):
        raise InvalidInputError(f"X must be 2-D with one row per label: {X.shape} vs {y.shape}")
    if rounds < 1:
        raise InvalidInputError(f"rounds must be at least 1, got {rounds}")
    from sklearn.base import is_classifier

    classify = is_classifier(model)
    if classify and classes is None:
        classes = getattr(model, "classes_", None)
        classes = np.unique(y) if classes is None else classes
    validation_data = None
    if isinstance(validation, float):
        X, X_val, y, y_val = _validation_split(X, y, validation, classify, random_state)
        if groups is not None:
            raise InvalidInputError("a validation fraction cannot be combined with groups")
        validation_data = (X_val, y_val)
    elif validation is not None:
        validation_data = validation
    rng = np.random.default_rng(random_state)
    parts = partition_rows(y, n_clients, partition, rng, groups=groups)
    training = training if training is not None else TrainingConfig()
    scaler = None
    if standardize and feature_range is not None:
        raise InvalidInputError("pass standardize=True or feature_range, not both")
    if standardize and privacy is not None:
        raise InvalidInputError(
            "standardize=True releases every client's exact feature sums and sums of squares, "
            "which no privacy budget covers; with differential privacy pass public bounds "
            "(feature_range=(lower, upper)) or scale the features beforehand"
        )
    if standardize:
        scaler = scaler_from_moments([client_moments(X[rows]) for rows in parts])
    elif feature_range is not None:
        scaler = scaler_from_bounds(*feature_range)
        if scaler.n_features_in_ != X.shape[1]:
            raise InvalidInputError(
                f"feature_range has {scaler.n_features_in_} bounds for {X.shape[1]} features"
            )
    if scaler is not None:
        X = scaler.transform(X)
        if validation_data is not None:
            validation_data = (scaler.transform(validation_data[0]), validation_data[1])
    width = max(4, len(str(len(parts) - 1)))
    clients = [
        FederatedClient(
            f"client_{i:0{width}d}", X[rows], y[rows], training=training,
            random_state=random_state,
        )
        for i, rows in enumerate(parts)
    ]
    sizes = [len(rows) for rows in parts]
    options = dict(strategy_options or {})
    if not isinstance(strategy, Strategy):
        options.setdefault("fraction_fit", fraction_fit)
        options.setdefault("min_fit_clients", min_fit_clients)
    if privacy is not None:
        if privacy.level in ("record", "distributed"):
            if privacy.noise_multiplier is None and privacy.rounds is None:
                privacy = replace(privacy, rounds=rounds)  # split over the planned rounds
        else:
            per_round = max(min_fit_clients, math.ceil(fraction_fit * len(clients)))
            privacy = calibrate_privacy(
                privacy, sampling_rate=min(1.0, per_round / len(clients)), steps=rounds
            )
    server = FederatedServer(
        model,
        strategy,
        classes=classes,
        n_features=X.shape[1],
        strategy_options=options,
        privacy=privacy,
        max_update_norm=max_update_norm,
        validation_data=validation_data,
        early_stopping=early_stopping,
        checkpoint_dir=checkpoint_dir,
        resume=resume,
        expected_clients=len(clients),
        secure_aggregation=secure_aggregation,
        random_state=random_state,
    )
    transport = InProcessTransport(clients, timeout=timeout, faults=faults)
    with _RoundProgress(rounds, server.round - 1, enabled=progress) as bar:
        server.fit(transport, rounds, on_round=bar.advance)
    model = server.get_global_model()
    if scaler is not None:
        from sklearn.pipeline import make_pipeline

        model = make_pipeline(scaler, model)
    return SimulationResult(model, server.history, server, sizes, clients)


class _RoundProgress:
    """A rich progress bar over rounds showing the newest metric and epsilon."""

    def __init__(self, rounds: int, done: int, *, enabled: bool) -> None:
        self.enabled = enabled
        self.rounds = rounds
        self.done = done

    def __enter__(self) -> _RoundProgress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self.bar = Progress(
                TextColumn("federated rounds"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                transient=True,
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("", total=self.rounds, completed=self.done)
        return self

    def advance(self, record: RoundRecord) -> None:
        if not self.enabled:
            return
        shown = [f"{k} {v:.4f}" for k, v in record.metrics.items() if k in ("accuracy", "r2")]
        if record.epsilon is not None:
            shown.append(f"eps {record.epsilon:.3f}")
        self.bar.update(self.task, advance=1, description="  ".join(shown))

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)
