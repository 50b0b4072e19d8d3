"""Reading a model's intermediate features, and matching the student's to the teacher's.

Like TextBrewer's adaptor, :func:`forward_features` turns any model's forward pass into one standard record
(logits, hidden states, attentions, tapped module outputs, token mask), so the objective never knows the model class.
Hidden states and attentions come from HF outputs; any other module's output comes from a forward hook on its
dotted path (:class:`FeatureTaps`), so a CNN or RNN student needs no code changes (as in torchdistill).
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers.masking_utils import eager_mask

from textdistill.config import LayerMapConfig, LayerMatch, MiniLMConfig, value_at
from textdistill.dropout import attend, hold_attention_function, release_attention_function
from textdistill.errors import TextDistillError
from textdistill.losses import ATTENTION_LOSSES, FEATURE_LOSSES, attention_kl_loss, merge_heads, value_relation_loss
from textdistill.models import find_layer_stack

# The value projection inside one transformer block, by model type (MiniLM's value relation reads its output).
VALUE_MODULES = {
    "bert": "attention.self.value",
    "roberta": "attention.self.value",
    "xlm-roberta": "attention.self.value",
    "electra": "attention.self.value",
    "mpnet": "attention.attn.v",
    "distilbert": "attention.v_lin",
}


# Attention implementation used while attention maps are distilled. HF's eager attention returns its maps *after*
# attention dropout, so in training a student's rows no longer sum to one (about a tenth of their entries are zero,
# the rest scaled by 1/(1-p)) and KL against the teacher's rows is dominated by the dropped entries (about 2.8 nats
# per row at p=0.1). This one computes the same output, dropout included, and returns the distributions before it.
# Registered with transformers only while a model uses it (use_map_attention ... IntermediateLosses.close).
MAPS_ATTENTION = "textdistill_eager_maps"


def eager_attention_with_maps(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **_kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """HF's eager attention (``[B, H, L, D]`` inputs, additive mask), returning the attention distributions before
    dropout; the output is computed with dropout, as in eager."""
    return attend(query, key, value, attention_mask, scaling, dropout, module.training)


def use_map_attention(model: nn.Module) -> bool:
    """Switch ``model`` to :data:`MAPS_ATTENTION`; models that do not take an attention function (MPNet, for one)
    get HF's eager attention instead, and False is returned: their maps include attention dropout in training.

    When True, :data:`MAPS_ATTENTION` stays registered with transformers until the caller, having switched the model
    back, calls :func:`textdistill.dropout.release_attention_function` (:meth:`IntermediateLosses.close` does)."""
    hold_attention_function(MAPS_ATTENTION, eager_attention_with_maps, eager_mask)
    try:
        model.set_attn_implementation(MAPS_ATTENTION)  # type: ignore[operator]
        if model.config._attn_implementation == MAPS_ATTENTION:
            return True
        model.set_attn_implementation("eager")  # type: ignore[operator]
    except BaseException:
        release_attention_function(MAPS_ATTENTION)
        raise
    release_attention_function(MAPS_ATTENTION)
    return False


class FeatureTaps:
    """Forward hooks that keep the latest output of modules named by dotted path (first element of a tuple)."""

    def __init__(self, model: nn.Module, paths: list[str], role: str) -> None:
        names = dict(model.named_modules())
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []
        for path in dict.fromkeys(paths):
            if path not in names:
                near = difflib.get_close_matches(path, list(names), n=3, cutoff=0.5)
                hint = f"; nearest: {near}" if near else ""
                raise TextDistillError(f"{role}: no module named {path!r} in {type(model).__name__}{hint}")
            self._handles.append(names[path].register_forward_hook(self._keep(path)))

    def _keep(self, path: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self.outputs[path] = output[0] if isinstance(output, (tuple, list)) else output

        return hook

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


@dataclass
class Features:
    logits: torch.Tensor
    mask: torch.Tensor  # [B, L] bool
    hidden: tuple[torch.Tensor, ...] = ()
    attentions: tuple[torch.Tensor, ...] = ()
    modules: dict[str, torch.Tensor] = field(default_factory=dict)


def forward_features(
    model: nn.Module, inputs: dict[str, torch.Tensor], hidden: bool, attentions: bool, taps: FeatureTaps | None
) -> Features:
    kwargs: dict[str, Any] = {}
    if hidden:
        kwargs["output_hidden_states"] = True
    if attentions:
        kwargs["output_attentions"] = True
    out = model(**inputs, **kwargs)
    return Features(
        logits=out.logits,
        mask=inputs["attention_mask"].bool(),
        hidden=tuple(getattr(out, "hidden_states", None) or ()),
        attentions=tuple(getattr(out, "attentions", None) or ()),
        modules=dict(taps.outputs) if taps is not None else {},
    )


# --------------------------------------------------------------------------------------------------------------------
# Layer maps


def _num_layers(model: nn.Module) -> int:
    return int(getattr(model.config, "num_hidden_layers", 0))


def generate_matches(
    spec: LayerMapConfig, teacher_layers: int, student_layers: int, kept: list[int] | None
) -> list[LayerMatch]:
    """Expand a layer-map generator into explicit matches (block numbers are 1-based; hidden layer 0 = embeddings)."""
    n, m = teacher_layers, student_layers
    if spec.strategy == "uniform":
        pairs = [(round(j * n / m), j) for j in range(1, m + 1)]
    elif spec.strategy == "skip":
        pairs = [(j * (n // m), j) for j in range(1, m)]
    elif spec.strategy == "last_k":
        pairs = [(n - m + j, j) for j in range(1, m + 1)]
    elif spec.strategy == "last":
        pairs = [(n, m)]
    else:
        if kept is None:
            raise TextDistillError("distill.layer_map: strategy 'kept' needs a student made from teacher layers")
        pairs = [(t + 1, j + 1) for j, t in enumerate(kept)]
    if spec.include_embeddings and spec.feature == "hidden":
        pairs = [(0, 0), *pairs]
    if not pairs:
        raise TextDistillError(f"distill.layer_map: strategy {spec.strategy!r} gives no pairs for {m} student layers")
    return [
        LayerMatch(
            feature=spec.feature,
            teacher_layer=t,
            student_layer=s,
            loss=spec.loss,
            weight=spec.weight,
            projection=spec.projection,
        )
        for t, s in pairs
    ]


def _pick(items: tuple[torch.Tensor, ...], index: int, role: str, what: str, offset: int) -> torch.Tensor:
    """``offset``: 0 for hidden states (index 0 exists), 1 for attentions (blocks numbered from 1)."""
    count = len(items)
    i = index if index < 0 else index - offset
    if not -count <= i < count:
        valid = f"{offset}..{count - 1 + offset}"
        raise TextDistillError(
            f"distill.intermediate: {role} {what} layer {index} out of range ({valid}, or negative from the end)"
        )
    return items[i]


# --------------------------------------------------------------------------------------------------------------------
# The intermediate objective


class IntermediateLosses(nn.Module):
    """All intermediate terms of one run; owns the learned projections (trained with the student).

    Call :meth:`setup` once with a real batch before training: it checks every match against the actual shapes
    (clear errors before any step), creates the projections, and attaches the hooks.
    """

    def __init__(
        self, matches: list[LayerMatch], minilm: MiniLMConfig | None, student: nn.Module, teacher: nn.Module
    ) -> None:
        super().__init__()
        self.matches = matches
        self.minilm = minilm
        self.projections = nn.ModuleDict()
        self.need_hidden = any(m.feature == "hidden" for m in matches)
        self.need_attentions = any(m.feature == "attention" for m in matches) or minilm is not None
        s_paths = [m.student_module for m in matches if m.feature == "module"]
        t_paths = [m.teacher_module for m in matches if m.feature == "module"]
        self._value_paths: tuple[str, str] | None = None
        if minilm is not None:
            sv, tv = (
                _value_path(student, minilm.student_layer, "student"),
                _value_path(teacher, minilm.teacher_layer, "teacher"),
            )
            s_paths.append(sv)
            t_paths.append(tv)
            self._value_paths = (sv, tv)
        self.student_taps = FeatureTaps(student, [p for p in s_paths if p], "student")
        self.teacher_taps = FeatureTaps(teacher, [p for p in t_paths if p], "teacher")
        self.relation_heads = (minilm.relation_heads if minilm else None) or getattr(
            teacher.config, "num_attention_heads", 1
        )
        self._restore: list[
            tuple[nn.Module, str, bool]
        ] = []  # (model, its implementation, whether it holds MAPS_ATTENTION)
        try:
            for model in (student, teacher):
                if self.need_attentions and hasattr(model, "set_attn_implementation"):
                    impl = model.config._attn_implementation
                    # fused attention kernels do not return the maps
                    maps = use_map_attention(model)
                    self._restore.append((model, impl, maps))
                    if not maps and model is student and (p := _attention_dropout(model)) > 0:
                        warnings.warn(
                            f"student {type(model).__name__} takes no custom attention function: its attention maps in "
                            f"training include attention dropout (p={p}); set its attention_probs_dropout_prob to 0 to "
                            "distill clean maps"
                        )
        except BaseException:  # (a warning turned into an error, say): the models and registries as they were
            self.close()
            raise

    def close(self) -> None:
        """Remove the hooks, give both models back their attention implementation (for speed measurements) and
        take :data:`MAPS_ATTENTION` out of transformers' registries (once nothing else holds it)."""
        self.student_taps.close()
        self.teacher_taps.close()
        restore, self._restore = self._restore, []
        try:
            for model, impl, _ in restore:
                model.set_attn_implementation(impl)
        finally:
            for _, _, maps in restore:
                if maps:
                    release_attention_function(MAPS_ATTENTION)

    def features(self, model: nn.Module, inputs: dict[str, torch.Tensor], side: str) -> Features:
        taps = self.student_taps if side == "student" else self.teacher_taps
        return forward_features(model, inputs, self.need_hidden, self.need_attentions, taps)

    def _pair(self, i: int, m: LayerMatch, s: Features, t: Features) -> tuple[torch.Tensor, torch.Tensor]:
        if m.feature == "hidden":
            return _pick(s.hidden, m.student_layer, "student", "hidden", 0), _pick(
                t.hidden, m.teacher_layer, "teacher", "hidden", 0
            )  # type: ignore[arg-type]
        if m.feature == "attention":
            sa = _pick(s.attentions, m.student_layer, "student", "attention", 1)  # type: ignore[arg-type]
            ta = _pick(t.attentions, m.teacher_layer, "teacher", "attention", 1)  # type: ignore[arg-type]
            heads = min(sa.shape[1], ta.shape[1])
            try:
                return merge_heads(sa, heads), merge_heads(ta, heads)
            except ValueError as exc:
                raise TextDistillError(f"distill.intermediate[{i}]: {exc}") from None
        return s.modules[m.student_module], t.modules[m.teacher_module]  # type: ignore[index]

    @torch.no_grad()
    def setup(self, s: Features, t: Features) -> None:
        """Check shapes and create projections, from the features of one real batch."""
        for i, m in enumerate(self.matches):
            sf, tf = self._pair(i, m, s, t)
            where = (
                f"distill.intermediate[{i}] ({m.feature} student {m.student_layer or m.student_module} -> "
                f"teacher {m.teacher_layer or m.teacher_module})"
            )
            if sf.dim() != tf.dim() or sf.shape[:-1] != tf.shape[:-1]:
                raise TextDistillError(
                    f"{where}: shapes differ: student {tuple(sf.shape)} vs teacher {tuple(tf.shape)}"
                )
            if sf.shape[-1] != tf.shape[-1] and m.feature != "attention":
                if not m.projection:
                    raise TextDistillError(
                        f"{where}: widths differ (student {sf.shape[-1]}, teacher {tf.shape[-1]}) and projection is off"
                    )
                self.projections[str(i)] = nn.Linear(sf.shape[-1], tf.shape[-1]).to(sf.device)
        if self._value_paths is not None:
            for side, feats, path in (("student", s, self._value_paths[0]), ("teacher", t, self._value_paths[1])):
                width = feats.modules[path].shape[-1]
                if width % self.relation_heads:
                    raise TextDistillError(
                        f"distill.minilm: {side} value width {width} is not divisible by "
                        f"relation_heads={self.relation_heads}"
                    )

    def forward(self, s: Features, t: Features, progress: float) -> dict[str, torch.Tensor]:
        """Weighted terms, keyed ``<feature>_<student>_<teacher>_<loss>``, and ``intermediate`` (their weighted sum)."""
        terms: dict[str, torch.Tensor] = {}
        total = s.logits.new_zeros((), dtype=torch.float32)
        for i, m in enumerate(self.matches):
            sf, tf = self._pair(i, m, s, t)
            if str(i) in self.projections:
                sf = self.projections[str(i)](sf)
            mask = s.mask if sf.dim() == 3 and m.feature != "attention" and sf.shape[1] == s.mask.shape[1] else None
            if m.feature == "attention":
                value = ATTENTION_LOSSES[m.loss](sf, tf, s.mask)
            else:
                value = FEATURE_LOSSES[m.loss](sf, tf, mask)
            student, teacher = (
                (m.student_module, m.teacher_module) if m.feature == "module" else (m.student_layer, m.teacher_layer)
            )
            key = f"{m.feature}_{student}_{teacher}_{m.loss}"
            terms[key] = value
            total = total + value_at(m.weight, progress) * value
        if self.minilm is not None and self._value_paths is not None:
            sa = _pick(s.attentions, self.minilm.student_layer, "student", "attention", 1)
            ta = _pick(t.attentions, self.minilm.teacher_layer, "teacher", "attention", 1)
            heads = min(sa.shape[1], ta.shape[1])
            terms["minilm_attention"] = attention_kl_loss(merge_heads(sa, heads), merge_heads(ta, heads), s.mask)
            sv, tv = s.modules[self._value_paths[0]], t.modules[self._value_paths[1]]
            terms["minilm_value"] = value_relation_loss(sv, tv, self.relation_heads, s.mask)
            total = total + value_at(self.minilm.attention_weight, progress) * terms["minilm_attention"]
            total = total + value_at(self.minilm.value_weight, progress) * terms["minilm_value"]
        terms["intermediate"] = total
        return terms


def _attention_dropout(model: nn.Module) -> float:
    config = model.config
    return float(getattr(config, "attention_probs_dropout_prob", getattr(config, "attention_dropout", 0.0)) or 0.0)


def _value_path(model: nn.Module, layer: int, role: str) -> str:
    """Dotted path of the value projection in block ``layer`` (1-based, negative from the end)."""
    model_type = getattr(model.config, "model_type", "")
    if model_type not in VALUE_MODULES:
        raise TextDistillError(
            f"distill.minilm: {role} model type {model_type!r} has no known value projection; "
            f"known: {sorted(VALUE_MODULES)}"
        )
    _, _, stack, stack_path = find_layer_stack(model)
    n = len(stack)
    index = layer if layer < 0 else layer - 1
    if not -n <= index < n:
        raise TextDistillError(f"distill.minilm: {role}_layer {layer} out of range (1..{n}, or negative from the end)")
    return f"{stack_path}.{index % n}.{VALUE_MODULES[model_type]}"


def resolve_matches(
    matches: list[LayerMatch],
    maps: list[LayerMapConfig],
    teacher: nn.Module,
    student: nn.Module,
    kept: list[int] | None,
) -> list[LayerMatch]:
    out = list(matches)
    for spec in maps:
        out += generate_matches(spec, _num_layers(teacher), _num_layers(student), kept)
    return out
