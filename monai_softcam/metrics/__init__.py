"""Metrics: classification (accuracy, AUC, ...) and explanation quality (localisation, faithfulness, sparseness)."""

from .classification import (
    ClassificationMetrics,
    accuracy,
    average_precision,
    binary_average_precision,
    binary_roc_auc,
    classification_report,
    confusion_matrix,
    precision,
    quadratic_kappa,
    roc_auc,
    sensitivity,
    specificity,
    two_columns,
)
from .explanation import HIGHER_IS_BETTER, ExplanationMetrics, ExplanationSettings, explanation_values

__all__ = [
    "ClassificationMetrics",
    "ExplanationMetrics",
    "ExplanationSettings",
    "HIGHER_IS_BETTER",
    "accuracy",
    "average_precision",
    "binary_average_precision",
    "binary_roc_auc",
    "classification_report",
    "confusion_matrix",
    "explanation_values",
    "precision",
    "quadratic_kappa",
    "roc_auc",
    "sensitivity",
    "specificity",
    "two_columns",
]
