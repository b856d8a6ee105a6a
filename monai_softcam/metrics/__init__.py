"""Metrics: classification (accuracy, AUC, ...) and, later, explanation quality."""

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

__all__ = [
    "ClassificationMetrics",
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
