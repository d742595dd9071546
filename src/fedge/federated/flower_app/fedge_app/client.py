"""The ClientApp: a FederatedClient over the SuperNode's CSV (node config ``data-file``,
``target``, optional ``client-id``)."""

from fedge.federated.flower import client_app as app

__all__ = ["app"]
