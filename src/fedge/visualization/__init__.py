"""Figures of what fedge did: interactive Plotly views, static matplotlib figures, the run report.

Figure functions take plain data or fedge records (a federated :class:`~fedge.federated.History`,
compression candidates, benchmark reports) and return a figure; bad input raises
:class:`fedge.errors.InvalidInputError`. Needs the ``viz`` extra (``pip install 'fedge[viz]'``).
"""
