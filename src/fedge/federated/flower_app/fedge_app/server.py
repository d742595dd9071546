"""The ServerApp: fedge's FederatedServer over the SuperLink's Grid."""

from fedge.federated.flower import server_app as app

__all__ = ["app"]
