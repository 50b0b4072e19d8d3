"""Deployable students: ONNX export, int8 dynamic quantization, and a check of each form against PyTorch.

``export_student`` writes ``model.onnx`` (fp32) and ``model.int8.onnx`` (weights int8, activations quantized on the
fly by ONNX Runtime) into a folder, then scores each form on the validation examples: largest logit difference
from the PyTorch model, the task metric, size on disk, CPU latency at batch 1 and throughput at batch 32.
Needs the optional packages ``onnx`` and ``onnxruntime`` (``pip install -e ".[export]"``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from textdistill.data import DistillDataset, pad_features
from textdistill.errors import TextDistillError
from textdistill.first_token import can_cut, first_token_only
from textdistill.metrics import SPEED_ROUNDS, in_turns, measure_speed, metrics_for, summarize_rounds

Forward = Callable[[dict[str, torch.Tensor]], torch.Tensor]


def _require_onnx() -> Any:
    try:
        import onnxruntime

        return onnxruntime
    except ImportError:
        raise TextDistillError('export: onnxruntime is not installed; run: pip install -e ".[export]"') from None


def _input_names(features: list[dict[str, list[int]]]) -> list[str]:
    return [*features[0].keys(), "attention_mask"]


def export_onnx(model: nn.Module, features: list[dict[str, list[int]]], path: Path, pad_token_id: int) -> Path:
    """Export ``model`` (eval mode, CPU) to ONNX with dynamic batch and sequence axes.

    Attention is exported in its plain (eager) form, whatever the model runs with: ONNX Runtime's int8 kernels and
    fusions know that graph; the fused SDPA export comes out about 10% slower in int8 (measured on SST-2 students).
    The graph returns logits alone, so the last layer of a sequence classifier that can be cut is exported for
    ``[CLS]`` alone (:func:`textdistill.first_token.first_token_only`; the same logits, fewer products per example).
    """
    model = model.eval().cpu()
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if impl not in (None, "eager") and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
        try:
            return export_onnx(model, features, path, pad_token_id)
        finally:
            model.set_attn_implementation(impl)
    sample = pad_features(features[:2], pad_token_id)
    names = _input_names(features)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}

    class LogitsOnly(nn.Module):  # ONNX graphs take positional inputs and return a plain tensor
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, args))).logits

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        # The tracer's and the legacy exporter's warnings (a tensor turned into a Python value, constant folding, the
        # TorchScript exporter's deprecation) are silenced for this call alone: each form is checked against PyTorch on
        # the validation examples after the export, which is what they warn about. The caller's filters are untouched.
        with torch.no_grad(), first_token_only(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                LogitsOnly(model).eval(),
                tuple(sample[n] for n in names),
                str(tmp),
                input_names=names,
                output_names=["logits"],
                dynamic_axes=axes,
                opset_version=17,
                dynamo=False,
            )
    except Exception as exc:  # the exporter raises many types; all mean "this model cannot be exported"
        tmp.unlink(missing_ok=True)
        raise TextDistillError(
            f"export: cannot export {type(model).__name__} to ONNX: {str(exc).splitlines()[0]}"
        ) from None
    tmp.replace(path)
    return path


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantization of an ONNX model's weights (ONNX Runtime)."""
    _require_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = target.with_suffix(".tmp")
    with _without_preprocessing_hint():
        quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8)
    tmp.replace(target)
    return target


PREPROCESSING_HINT = "Please consider to run pre-processing before quantization"  # ONNX Runtime's, to the root logger


@contextlib.contextmanager
def _without_preprocessing_hint() -> Iterator[None]:
    """During the quantization alone, drop ONNX Runtime's advice to pre-process the graph (a ``WARNING:root:`` line
    at every export, aimed at shape inference of vision models; the int8 form is checked against PyTorch anyway)."""
    hint = logging.Filter()
    hint.filter = lambda record: PREPROCESSING_HINT not in record.getMessage()  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def onnx_forward(path: Path, names: list[str], threads: int | None = None) -> Forward:
    """A forward function over padded inputs backed by an ONNX Runtime CPU session."""
    ort = _require_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    # The exporter drops inputs the model never reads (a BiLSTM student ignores token_type_ids): feed the graph's own.
    graph_inputs = {i.name for i in session.get_inputs()}
    names = [n for n in names if n in graph_inputs]

    def forward(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        feed = {n: inputs[n].numpy().astype(np.int64) for n in names}
        return torch.from_numpy(session.run(["logits"], feed)[0])

    return forward


def torch_forward(model: nn.Module, first_token: bool = False) -> Forward:
    """The PyTorch model's logits as transformers computes them; ``first_token``: its last layer for ``[CLS]`` alone
    (:func:`textdistill.first_token.first_token_only`, as the ONNX graph has it)."""
    model = model.eval().cpu()

    @torch.inference_mode()
    def forward(inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with first_token_only(model, enabled=first_token):
            return model(**inputs).logits.float()

    return forward


def predict(forward: Forward, dataset: DistillDataset, pad_token_id: int, batch_size: int = 64) -> torch.Tensor:
    out = []
    for start in range(0, len(dataset), batch_size):
        out.append(forward(pad_features(dataset.student[start : start + batch_size], pad_token_id)).float())
    return torch.cat(out)


def export_student(
    model: nn.Module,
    dataset: DistillDataset,
    pad_token_id: int,
    folder: str | os.PathLike,
    metric: str,
    repeats: int = 20,
) -> dict[str, dict[str, Any]]:
    """Export to ONNX fp32 and int8 in ``folder`` and compare every form with PyTorch on ``dataset``: the model as
    transformers runs it ("pytorch fp32", the reference for logits, metric and throughput), the same with its last
    layer for ``[CLS]`` alone where the export has that cut ("pytorch fp32 cut"), and the two ONNX forms. Speeds are
    the medians of :data:`SPEED_ROUNDS` rounds of :func:`measure_speed` (``repeats`` calls each) in which the forms
    take turns."""
    _require_onnx()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fp32 = export_onnx(model, dataset.student, folder / "model.onnx", pad_token_id)
    int8 = quantize_int8(fp32, folder / "model.int8.onnx")
    names = _input_names(dataset.student)
    speed_feats = dataset.student[:256]
    forwards: dict[str, tuple[Forward, int | None]] = {"pytorch fp32": (torch_forward(model), None)}
    if can_cut(model):  # PyTorch computing what the ONNX graph computes: the last layer for [CLS] alone
        forwards["pytorch fp32 cut"] = (torch_forward(model, first_token=True), None)
    forwards["onnx fp32"] = (onnx_forward(fp32, names), fp32.stat().st_size)
    forwards["onnx int8"] = (onnx_forward(int8, names), int8.stat().st_size)
    logits = {name: predict(forward, dataset, pad_token_id) for name, (forward, _) in forwards.items()}
    reference = logits["pytorch fp32"]
    forms: dict[str, dict[str, Any]] = {
        name: {
            "metrics": metrics_for(logits[name], dataset.labels),
            "max_abs_logit_diff": float((logits[name] - reference).abs().max()),
            "size_bytes": size,
        }
        for name, (_, size) in forwards.items()
    }
    # timed side by side: the forms take turns, each round in a rotated order (so none always runs right after an
    # ONNX Runtime session, whose threads keep spinning a moment after a call); the median of the rounds
    timers = {
        name: partial(measure_speed, forward, speed_feats, pad_token_id, repeats=repeats)
        for name, (forward, _) in forwards.items()
    }
    for name, runs in in_turns(timers, SPEED_ROUNDS).items():
        forms[name].update(summarize_rounds(runs))
    base = forms["pytorch fp32"]
    for entry in forms.values():
        entry["metric_diff_points"] = 100 * (entry["metrics"][metric] - base["metrics"][metric])
        entry["throughput_vs_pytorch"] = entry["throughput_batch32"] / base["throughput_batch32"]
    return forms
