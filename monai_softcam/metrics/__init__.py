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
)
from .explanation import ExplanationMetrics

__all__ = [
    "ClassificationMetrics",
    "ExplanationMetrics",
    "accuracy",
    "average_precision",
    "binary_average_precision",
    "binary_roc_auc",
    "classification_report",
    "confusion_matrix",
    "precision",
    "quadratic_kappa",
    "roc_auc",
    "sensitivity",
    "specificity",
]
