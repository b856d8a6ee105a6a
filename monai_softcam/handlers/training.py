"""Ignite handlers of training: the weights (load, keep the best, checkpoint for resuming), early
stopping and the TensorBoard scalars of the learning rate and the loss terms. Files are written
atomically and only on the main process under ``torch.distributed``."""

from __future__ import annotations

import logging
import math
import os
import time
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import EarlyStopping as IgniteEarlyStopping
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys

from ..checkpoint import (
    CheckpointError,
    load_state_checked,
    load_weights,
    portable_state_dict,
    read_checkpoint,
    save_checkpoint,
    unwrap_module,
)
from ..utils import InputError, as_flag, barrier, is_main_process

logger = logging.getLogger("monai_softcam")


class LoadWeights:
    """Load a model checkpoint when the engine starts (see :func:`monai_softcam.checkpoint.load_weights`).
    ``path=None`` says that the network already holds its weights (a TorchScript export): nothing is loaded.
    Under ``torch.distributed`` every process first waits for the others (the main one writes the checkpoint)."""

    def __init__(self, path: str | None, model: torch.nn.Module) -> None:
        self.path = path
        self.model = model

    def attach(self, engine: Engine) -> None:
        """Attach to ``engine``: load the weights when it starts."""
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if self.path is None:
            logger.info("the network holds its own weights: no checkpoint loaded")
            return
        barrier()
        load_weights(self.model, self.path)
        logger.info("loaded model weights from %s", self.path)


class StopOnNonFinite:
    """Stop training at the first non-finite loss, or non-finite gradients, naming the batch's files (attach to
    the trainer).

    The loss is checked when it is computed (``LOSS_COMPLETED``), the gradients after the backward pass
    (``BACKWARD_COMPLETED``): both before the optimizer's step, so the weights stay as they were. With AMP the
    gradients are scaled and the GradScaler skips the steps whose gradients overflow (normal, not counted); only
    the loss is checked then. A NaN loss comes from a NaN input, a label outside the classes or a learning rate
    that makes training diverge; the error names the batch so that its images can be checked
    (``python -m monai_softcam check-data``).
    """

    def __init__(self, shown: int = 8) -> None:
        self.shown = shown

    def attach(self, engine: Engine) -> None:
        """Attach to a MONAI trainer (its iteration events)."""
        engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self._loss)
        if not getattr(engine, "amp", False):
            engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self._gradients)

    def _loss(self, engine: Engine) -> None:
        loss = engine.state.output[Keys.LOSS]
        if not bool(torch.isfinite(loss.detach()).all()):
            self._stop(engine, f"the loss is {float(loss.detach().float().mean())}")

    def _gradients(self, engine: Engine) -> None:
        grads = [p.grad for p in engine.network.parameters() if p.grad is not None]
        if grads and not bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))):
            self._stop(engine, "the gradients hold NaN or infinite values")

    def _stop(self, engine: Engine, what: str) -> None:
        files = _batch_files(engine.state.batch)
        shown = ", ".join(files[: self.shown]) + (
            f" and {len(files) - self.shown} more" if len(files) > self.shown else ""
        )
        raise InputError(
            f"training stopped at epoch {engine.state.epoch}, iteration {engine.state.iteration}: {what} for the "
            f"batch of {shown or 'unnamed images'}; no weights were updated with it. Check these images "
            "and their labels, or lower the learning rate"
        )


def _batch_files(batch: Any) -> list[str]:
    """The image files of a collated (or decollated) batch, from the images' metadata."""
    items = batch if isinstance(batch, list) else [batch]
    files: list[str] = []
    for item in items:
        image = item.get(Keys.IMAGE) if isinstance(item, dict) else None
        names = getattr(image, "meta", {}).get("filename_or_obj", [])
        files += [str(n) for n in ([names] if isinstance(names, str) else list(names))]
    return files


def describe_device(device: Any) -> str:
    """Where a run trains, for its record: the GPU's name and how many processes (one per GPU), or the CPU's
    threads or processes (``"1 x NVIDIA H100 80GB HBM3 GPU"``, ``"CPU, 2 threads"``, ``"CPU, 2 processes"``)."""
    device = torch.device(device)
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    if device.type == "cuda":
        return f"{world} x {torch.cuda.get_device_name(device)} GPU"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU, {world} processes" if world > 1 else f"CPU, {torch.get_num_threads()} threads"


class TaskFile:
    """The trained task's file, written with the first checkpoint of the run that it describes, never before:
    a run that fails before its first checkpoint leaves the previous model's ``task.json`` untouched (the
    savers call :meth:`write` right before they write their first checkpoint; one instance, written once).
    Attached to the trainer (:meth:`attach`, by :class:`TrainingCheckpoint`), it adds to the task's record
    where the run trained (``device``: :func:`describe_device`) and, when the run completes, how long it trained
    (``training_time_s``, with ``epochs_trained`` and, for a resumed run, ``resumed_at_epoch``: this run's time).

    Args:
        task: the task as trained (``Task``: its ``save(path)`` writes it atomically, on the main process).
        path: the task file, ``<ckpt_dir>/task.json``.
        device: the device the run trains on (recorded); None: not recorded.
    """

    def __init__(self, task: Any, path: str, device: Any = None) -> None:
        self.task = task
        self.path = path
        self.device = device
        self.written = False
        self._started: float | None = None
        self._first_epoch = 0

    def attach(self, engine: Engine) -> None:
        """Time the trainer's run: from its start (after a resumed checkpoint is loaded: attached after the
        checkpoint's handler) to its completion, recorded if this run wrote the task file."""
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.COMPLETED, self._complete)

    def _start(self, engine: Engine) -> None:
        self._started, self._first_epoch = time.perf_counter(), engine.state.epoch

    def _complete(self, engine: Engine) -> None:
        if self.written and self._started is not None:
            record = {
                "training_time_s": round(time.perf_counter() - self._started, 1),
                "epochs_trained": engine.state.epoch - self._first_epoch,
            }
            if self._first_epoch:
                record["resumed_at_epoch"] = self._first_epoch
            self._save(record)

    def write(self) -> None:
        """Write the task file if this run has not written it yet."""
        if not self.written:
            self._save({} if self.device is None else {"device": describe_device(self.device)})
            self.written = True

    def _save(self, record: dict[str, Any]) -> None:
        """Save the task with ``record`` added to its record of the training run."""
        self.task = self.task.with_record({**self.task.trained_with, **record})
        self.task.save(self.path)


class BestModelSaver:
    """Save the model's state dict (as CPU tensors) whenever a validation metric improves (attach to the evaluator).

    Args:
        metric_name: key in ``engine.state.metrics``; NaN values never count as an improvement.
        path: file to (over)write atomically (:func:`~monai_softcam.checkpoint.save_checkpoint`) with
            the model's :func:`~monai_softcam.checkpoint.portable_state_dict`.
        model: the network (a DDP wrapper is unwrapped).
        greater_is_better: direction of improvement.
        task_file: the trained task's :class:`TaskFile`, written before the first checkpoint.

    The epoch recorded is the engine's: for a MONAI evaluator run by ``ValidationHandler``, the
    trainer's epoch. Its state (best value and epoch) is part of the training checkpoint, so a resumed run keeps it.
    Not ignite's ``Checkpoint``: with the fixed file name it removes the old best model before writing the new one.
    """

    def __init__(
        self,
        metric_name: str,
        path: str,
        model: torch.nn.Module,
        greater_is_better: bool = True,
        task_file: TaskFile | None = None,
    ) -> None:
        self.metric_name = metric_name
        self.task_file = task_file
        self.path = path
        self.model = model
        self.sign = 1.0 if greater_is_better else -1.0
        self.best: float | None = None
        self.best_epoch = 0

    def attach(self, engine: Engine) -> None:
        """Attach to ``engine``: check ``metric_name`` after every epoch and save the model when it improves."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        value = engine.state.metrics.get(self.metric_name)
        if value is None or not math.isfinite(float(value)):
            return
        value = float(value)
        if self.best is not None and self.sign * value <= self.sign * self.best:
            return
        self.best = value
        self.best_epoch = int(engine.state.epoch)
        if is_main_process():
            if self.task_file is not None:
                self.task_file.write()
            save_checkpoint(portable_state_dict(self.model), self.path)
            logger.info("new best %s = %.4f at epoch %d: saved %s", self.metric_name, value, self.best_epoch, self.path)

    def state_dict(self) -> dict[str, Any]:
        """The saver's state for the training checkpoint: best value and its epoch."""
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the best value and its epoch from :meth:`state_dict`'s output."""
        self.best = state.get("best")
        self.best_epoch = int(state.get("best_epoch", 0))


class TrainingCheckpoint:
    """The latest training state, saved after every epoch and optionally resumed from (attach to the trainer).

    Args:
        path: checkpoint file, (over)written atomically after each epoch and at the end.
        objects: name -> object with ``state_dict``/``load_state_dict`` (model, optimizer, lr scheduler,
            best-model savers, ...). The trainer's own progress (epoch, iteration) is added.
        resume: load ``path`` when the trainer starts; without a checkpoint yet, training starts
            from epoch 0 with a warning.
        task_file: the trained task's :class:`TaskFile`, written before the first checkpoint.

    A SIGKILL at any point leaves either the previous or the new complete checkpoint. Resuming a
    run that finished all its epochs trains on only if ``max_epochs`` grew; resuming one that stopped
    early trains no further (and leaves its checkpoint as it was).
    Not ignite's ``Checkpoint``: with the fixed file name it removes the previous state before writing the new one.
    """

    def __init__(
        self, path: str, objects: dict[str, Any], resume: bool = False, task_file: TaskFile | None = None
    ) -> None:
        self.path = path
        self.task_file = task_file
        self.objects = objects
        self.resume = as_flag(resume, "resume")
        self._stopped_early_before = False  # resumed a run that had already stopped early

    def attach(self, engine: Engine) -> None:
        """Attach to ``engine``: resume (if asked) when it starts, save after every epoch and at the end; the
        task file times the run from after the resume (:meth:`TaskFile.attach`)."""
        engine.add_event_handler(Events.STARTED, self._load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._save)
        engine.add_event_handler(Events.COMPLETED, self._save)
        if self.task_file is not None:
            self.task_file.attach(engine)

    def _state(self, engine: Engine) -> dict[str, Any]:
        state = {name: unwrap_module(obj).state_dict() for name, obj in self.objects.items()}
        stopped = bool(engine.should_terminate) and engine.state.epoch < (engine.state.max_epochs or 0)
        state["trainer"] = {"epoch": engine.state.epoch, "iteration": engine.state.iteration, "early_stopped": stopped}
        return state

    def _save(self, engine: Engine) -> None:
        if is_main_process() and not self._stopped_early_before:
            if self.task_file is not None:
                self.task_file.write()
            save_checkpoint(self._state(engine), self.path)

    def _load(self, engine: Engine) -> None:
        if not self.resume:
            return
        if not os.path.isfile(self.path):
            logger.warning("resume requested but no checkpoint at %s yet: training starts at epoch 0", self.path)
            return
        state = read_checkpoint(self.path, "training checkpoint")
        absent = [name for name in [*self.objects, "trainer"] if not isinstance(state, dict) or name not in state]
        if absent:
            raise CheckpointError(
                f"training checkpoint {self.path} lacks {absent}; it was written by another configuration"
            )
        for name, obj in self.objects.items():
            if name == "model":
                load_state_checked(obj, state[name], self.path)
            else:
                unwrap_module(obj).load_state_dict(state[name])
        progress = state["trainer"]
        engine.state.iteration = int(progress["iteration"])
        engine.state.epoch = int(progress["epoch"])
        logger.info("resumed from %s at epoch %d of %s", self.path, engine.state.epoch, engine.state.max_epochs)
        if progress.get("early_stopped"):
            logger.info("that run had stopped early at epoch %d: nothing left to train", engine.state.epoch)
            self._stopped_early_before = True
            engine.state.epoch = max(engine.state.epoch, int(engine.state.max_epochs or 0))


class EarlyStopping:
    """Stop training when a validation metric has not improved for ``patience`` validations (attach
    to the trainer, after the ``ValidationHandler``; ignite's ``EarlyStopping`` counts).

    Args:
        validator: the evaluator whose ``state.metrics[metric]`` is read after each validation.
        patience: validations without improvement before the trainer stops; 0 (or less): never stops.
        metric: the metric to watch (higher is better).
        interval: the validation interval in epochs (the ``ValidationHandler``'s).
    """

    def __init__(self, validator: Engine, patience: int = 0, metric: str = "accuracy", interval: int = 1) -> None:
        self.validator = validator
        self.patience = int(patience)
        self.metric = metric
        self.interval = max(1, int(interval))

    def attach(self, engine: Engine) -> None:
        """Attach to ``engine``: ignite's ``EarlyStopping`` on ``metric`` every ``interval`` epochs (nothing if
        ``patience <= 0``)."""
        if self.patience <= 0:
            return
        stopper = IgniteEarlyStopping(self.patience, lambda _: float(self.validator.state.metrics[self.metric]), engine)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), stopper)


class LearningRateLogger:
    """Write the learning rate of every parameter group to TensorBoard at the start of each epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, summary_writer: Any, tag: str = "learning_rate") -> None:
        self.optimizer = optimizer
        self.writer = summary_writer
        self.tag = tag

    def attach(self, engine: Engine) -> None:
        """Attach to ``engine``: write the learning rates at the start of every epoch."""
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        for i, group in enumerate(self.optimizer.param_groups):
            tag = self.tag if len(self.optimizer.param_groups) == 1 else f"{self.tag}/group{i}"
            self.writer.add_scalar(tag, group["lr"], engine.state.epoch)


class LossTermsLogger:
    """Write the epoch means of the terms of :class:`~monai_softcam.losses.SoftCAMLoss` to TensorBoard (tags
    ``train_ce``, ``train_penalty``, and ``train_guidance`` in a guided run): those the loss kept of each training
    batch (``last_terms``, detached), read after every iteration."""

    def __init__(self, loss_function: Any, summary_writer: Any) -> None:
        self.loss_function = loss_function
        self.writer = summary_writer
        self._sums: dict[str, float] = {}
        self._count = 0

    def attach(self, engine: Engine) -> None:
        """Attach to ``engine``: collect the loss terms after every iteration, write their means after every epoch."""
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _accumulate(self, engine: Engine) -> None:
        for name, value in self.loss_function.last_terms.items():
            self._sums[name] = self._sums.get(name, 0.0) + float(value)
        self._count += 1

    def _write(self, engine: Engine) -> None:
        for name, total in self._sums.items():
            self.writer.add_scalar(f"train_{name}", total / max(self._count, 1), engine.state.epoch)
        self._sums, self._count = {}, 0
