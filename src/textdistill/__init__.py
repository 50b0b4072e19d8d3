"""textdistill: knowledge distillation for NLP models.

The Python API mirrors the CLI::

    import textdistill
    report = textdistill.distill("examples/sst2.yaml", overrides=["student.num_layers=3"])
    textdistill.train_teacher(cfg)           # textdistill train
    textdistill.evaluate("runs/x/student", cfg)  # textdistill evaluate
"""

from typing import Any

from textdistill.config import RunConfig, load_config
from textdistill.errors import TextDistillError

__all__ = ["RunConfig", "TextDistillError", "distill", "evaluate", "load_config", "train_teacher"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:  # the commands import torch and transformers: load them on first use
    if name in {"distill", "evaluate", "train_teacher"}:
        from textdistill import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
