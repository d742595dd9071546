"""Figures of what fedge did: interactive Plotly views, static matplotlib figures, the run report.

Figure functions take plain data or fedge records (a federated :class:`~fedge.federated.History`,
compression candidates, benchmark reports) and return a figure; bad input raises
:class:`fedge.errors.InvalidInputError`. Needs the ``viz`` extra (``pip install 'fedge[viz]'``).
"""

from fedge.visualization import static
from fedge.visualization.export import browser_session, export_figure, export_figures
from fedge.visualization.interactive import (
    InteractiveDashboard,
    confusion_matrix_figure,
    feature_importance_figure,
    learning_curves_figure,
    model_comparison_figure,
    pca_scatter_3d_figure,
    precision_recall_figure,
    roc_curves_figure,
)
from fedge.visualization.model_viz import (
    compression_comparison_figure,
    decision_boundary_figure,
    mlp_layers_figure,
    parameter_analysis_figure,
    tree_structure_figure,
    weight_distribution_figure,
)
from fedge.visualization.performance_viz import (
    federated_rounds_figure,
    footprint_figure,
    latency_distribution_figure,
    load_history,
    metric_comparison_figure,
    pareto_front,
    pareto_front_figure,
    parity_matrix_figure,
    training_history_figure,
)
from fedge.visualization.report import build_report, load_run, write_report
from fedge.visualization.static import save_figure

__all__ = [
    "InteractiveDashboard",
    "browser_session",
    "build_report",
    "compression_comparison_figure",
    "confusion_matrix_figure",
    "decision_boundary_figure",
    "export_figure",
    "export_figures",
    "feature_importance_figure",
    "federated_rounds_figure",
    "footprint_figure",
    "latency_distribution_figure",
    "learning_curves_figure",
    "load_history",
    "load_run",
    "metric_comparison_figure",
    "mlp_layers_figure",
    "model_comparison_figure",
    "parameter_analysis_figure",
    "pareto_front",
    "pareto_front_figure",
    "parity_matrix_figure",
    "pca_scatter_3d_figure",
    "precision_recall_figure",
    "roc_curves_figure",
    "save_figure",
    "static",
    "training_history_figure",
    "tree_structure_figure",
    "weight_distribution_figure",
    "write_report",
]
