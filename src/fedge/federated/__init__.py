"""Federated learning: train across data holders without moving their data.

>>> from fedge.federated import FederatedServer, FederatedClient, AggregationStrategy
>>> server = FederatedServer(initial_model=LogisticRegression(),          # doctest: +SKIP
...                          aggregation_strategy=AggregationStrategy.FED_AVG, classes=[0, 1])
>>> client = FederatedClient("hospital_1", X_local, y_local)             # doctest: +SKIP
>>> client.receive_global_model(server.get_global_model())               # doctest: +SKIP
>>> server.receive_update(client.train_local(epochs=5))                   # doctest: +SKIP
>>> server.aggregate_updates()                                            # doctest: +SKIP

Or a whole in-process federation: ``simulate(LogisticRegression(), X, y, n_clients=10)``.
"""

from fedge.federated.aggregation import PlainSum, SumAggregator
from fedge.federated.client import FederatedClient
from fedge.federated.history import EarlyStopping, History, Rejection, RoundRecord
from fedge.federated.messages import ClientUpdate, FitInstructions, Parameters
from fedge.federated.partitioning import partition
from fedge.federated.privacy import (
    AdaptiveClipping,
    GaussianMechanism,
    LaplaceMechanism,
    PrivacyAccountant,
    PrivacyBudget,
    gaussian_sigma,
    laplace_scale,
    noise_multiplier_for,
)
from fedge.federated.privacy_config import DifferentialPrivacy, calibrate_privacy
from fedge.federated.secure import SecureAggregation
from fedge.federated.server import FederatedServer
from fedge.federated.simulation import SimulationResult, simulate
from fedge.federated.strategies import (
    AggregationStrategy,
    CoordinateMedian,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedProx,
    FedYogi,
    Krum,
    RoundPlan,
    Strategy,
    TrimmedMean,
    make_strategy,
)
from fedge.federated.training import ModelKind, ModelSpec, TrainingConfig
from fedge.federated.transport import FaultPlan, FitOutcome, InProcessTransport, Transport
from fedge.federated.trees import (
    FederatedHistGradientBoosting,
    federated_bagging,
    federated_histogram_boosting,
)

__all__ = [
    "AdaptiveClipping",
    "AggregationStrategy",
    "ClientUpdate",
    "CoordinateMedian",
    "DifferentialPrivacy",
    "EarlyStopping",
    "FaultPlan",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedProx",
    "FedYogi",
    "FederatedClient",
    "FederatedHistGradientBoosting",
    "FederatedServer",
    "FitInstructions",
    "FitOutcome",
    "GaussianMechanism",
    "History",
    "InProcessTransport",
    "Krum",
    "LaplaceMechanism",
    "ModelKind",
    "ModelSpec",
    "Parameters",
    "PlainSum",
    "PrivacyAccountant",
    "PrivacyBudget",
    "Rejection",
    "RoundPlan",
    "RoundRecord",
    "SecureAggregation",
    "SimulationResult",
    "Strategy",
    "SumAggregator",
    "TrainingConfig",
    "Transport",
    "TrimmedMean",
    "calibrate_privacy",
    "federated_bagging",
    "federated_histogram_boosting",
    "gaussian_sigma",
    "laplace_scale",
    "make_strategy",
    "noise_multiplier_for",
    "partition",
    "simulate",
]
