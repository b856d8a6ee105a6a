"""Ignite handlers of the SoftCAM workflows: training (:mod:`~monai_softcam.handlers.training`) and what a run
writes (:mod:`~monai_softcam.handlers.outputs`). Each handler has one ``attach(engine)`` and does one thing."""

from .outputs import EvidenceGallery, MetricsReport, PredictionsWriter, RegionsWriter, SkippedInputs, WaitForWriter
from .training import (
    BestModelSaver,
    EarlyStopping,
    LearningRateLogger,
    LoadWeights,
    LossTermsLogger,
    StopOnNonFinite,
    TaskFile,
    TrainingCheckpoint,
)

__all__ = [
    "BestModelSaver",
    "EarlyStopping",
    "EvidenceGallery",
    "LearningRateLogger",
    "LoadWeights",
    "LossTermsLogger",
    "MetricsReport",
    "PredictionsWriter",
    "RegionsWriter",
    "SkippedInputs",
    "StopOnNonFinite",
    "TaskFile",
    "TrainingCheckpoint",
    "WaitForWriter",
]
