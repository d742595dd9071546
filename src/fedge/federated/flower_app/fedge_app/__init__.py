"""fedge's Flower App: thin entry points into :mod:`fedge.federated.flower`."""
