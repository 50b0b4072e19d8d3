"""textdistill: knowledge distillation for NLP models.

The Python API mirrors the CLI::

    import textdistill
    report = textdistill.distill("examples/sst2.yaml", overrides=["student.num_layers=3"])
    textdistill.train_teacher(cfg)           # textdistill train
    textdistill.evaluate("runs/x/student", cfg)  # textdistill evaluate

textdistill is a guest in the caller's process: importing it changes nothing there, and what a call changes
process-wide is put back when it returns: glibc's malloc thresholds (``training.reuse_cpu_memory``, see
:mod:`textdistill.cpu_malloc`), the attention functions it registers with transformers, the models' dropout and
attention, accelerate's settings, and the random states the run seeds. One thing stays, by design: importing
``textdistill.students`` (as loading or building a BiLSTM / TextCNN / MLP student does) registers those model types
with transformers' Auto classes, and ``textdistill.multitask`` the multi-task model, so that
``AutoModelForSequenceClassification.from_pretrained`` loads saved students.
"""

from typing import Any

from textdistill.config import RunConfig, load_config
from textdistill.errors import TextDistillError

__all__ = ["RunConfig", "TextDistillError", "distill", "evaluate", "load_config", "train_teacher"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:  # the commands import torch and transformers: load them on first use
    if name in {"distill", "evaluate", "train_teacher"}:
        from textdistill import pipeline
        from textdistill.train import as_guest

        return as_guest(getattr(pipeline, name))  # (looked up at each access: not cached here)
    raise AttributeError(name)
