"""textdistill: knowledge distillation for NLP models.

The Python API takes what the CLI takes, and objects too (:mod:`textdistill.api`)::

    import textdistill
    result = textdistill.distill("examples/sst2.yaml", overrides=["student.num_layers=3"])
    result = textdistill.distill(teacher=model, tokenizer=tok, train=df_train, validation=df_dev, text_column="review")
    result.student("a fine film"); result.save("my-student")  # the report dict, and the student ready to call
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
from textdistill.version import __version__

__all__ = [
    "RunConfig",
    "TextDistillError",
    "__version__",
    "distill",
    "evaluate",
    "load_config",
    "predict",
    "train_teacher",
]


def __getattr__(name: str) -> Any:  # the commands import torch and transformers: load them on first use
    if name in {"distill", "evaluate", "label", "predict", "train_teacher"}:
        from textdistill import api
        from textdistill.train import as_guest

        return as_guest(getattr(api, name))  # (looked up at each access: not cached here)
    raise AttributeError(name)
