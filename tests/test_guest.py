"""textdistill is a guest in its user's process: importing it changes nothing there, and what a call of its Python
API changes process-wide (malloc thresholds, transformers' registries, patched attributes, torch's global settings,
random states, accelerate's settings, the environment, warnings and logging) is as it was when the call returns.

The one documented exception: ``textdistill.students`` and ``textdistill.multitask`` register textdistill's own model
types with transformers' Auto classes when imported (so that saved students load with ``from_pretrained``).

No textdistill import at the top of this file: a subprocess imports it to take the state before textdistill is loaded.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
PROBE_BYTES = 256 << 20  # above glibc's largest dynamic mmap threshold (32 MiB), below cpu_malloc.KEEP_BYTES
OWN_MODEL_TYPES = {"textdistill-bilstm", "textdistill-textcnn", "textdistill-mlp", "textdistill-multitask"}


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def observable() -> bool:
    """Whether this process can observe glibc's mmap threshold (glibc 2.33 and later have ``mallinfo2``)."""
    return GLIBC and hasattr(ctypes.CDLL(None), "mallinfo2")


def served_by_mmap(nbytes: int = PROBE_BYTES) -> bool:
    """Whether glibc's malloc serves a block of ``nbytes`` with fresh pages (mmap) rather than from its heap: what
    the process can observe of its mmap threshold (``mallinfo2().hblkhd``, the bytes in mmapped blocks, grows).
    Nothing is written to the block: no page is touched."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(nbytes)
    assert block, "malloc failed"
    try:
        return libc.mallinfo2().hblkhd >= before + nbytes
    finally:
        libc.free(block)


def _ids(namespace: dict[str, Any]) -> dict[str, int]:
    return {k: id(v) for k, v in namespace.items()}


# Modules and classes whose attributes textdistill could patch (a forward, an attention or mask function)
PATCHABLE_MODULES = [
    "torch.nn.functional",
    "transformers.modeling_utils",
    "transformers.masking_utils",
    "transformers.integrations.sdpa_attention",
    "transformers.models.bert.modeling_bert",
]


def snapshot() -> dict[str, Any]:
    """What the process shows of the state a library could leave changed (JSON-comparable)."""
    import importlib
    import random

    import numpy as np
    import torch
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.auto import configuration_auto, modeling_auto
    from transformers.utils import logging as hf_logging

    s: dict[str, Any] = {}
    s["malloc: a 256 MiB block from fresh pages"] = served_by_mmap() if observable() else None
    s["torch"] = {
        "threads": torch.get_num_threads(),
        "interop threads": torch.get_num_interop_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "deterministic warn only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "default dtype": str(torch.get_default_dtype()),
        "default device": str(torch.get_default_device()),
        "float32 matmul precision": torch.get_float32_matmul_precision(),
        "grad": torch.is_grad_enabled(),
        "inference mode": torch.is_inference_mode_enabled(),
        "anomaly": torch.is_anomaly_enabled(),
        "cudnn": [torch.backends.cudnn.enabled, torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark],
        "mkldnn": torch.backends.mkldnn.enabled,
        "tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    s["random states"] = [
        hash(random.getstate()),
        hash(keys.tobytes()) + pos,
        hash(torch.get_rng_state().numpy().tobytes()),
    ]
    s["attention functions"] = [
        _ids(AttentionInterface._global_mapping),
        _ids(AttentionMaskInterface._global_mapping),
        _ids(ALL_ATTENTION_FUNCTIONS._local_mapping),
        _ids(ALL_MASK_ATTENTION_FUNCTIONS._local_mapping),
    ]
    s["auto classes"] = {
        name: sorted(map(str, getattr(module, name)._extra_content))
        for module, name in (
            (configuration_auto, "CONFIG_MAPPING"),
            (modeling_auto, "MODEL_MAPPING"),
            (modeling_auto, "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING"),
            (modeling_auto, "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING"),
        )
    }
    patched: dict[str, Any] = {}
    for name in PATCHABLE_MODULES:
        module = importlib.import_module(name)
        patched[name] = _ids(vars(module))
        for attr, cls in list(vars(module).items()):
            if isinstance(cls, type) and cls.__module__ == name:
                patched[f"{name}.{attr}"] = _ids(vars(cls))
    patched["torch.nn.Dropout"] = _ids(vars(torch.nn.Dropout))
    s["attributes"] = patched
    s["hf logging"] = [hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()]
    s["environment"] = dict(os.environ)
    s["warning filters"] = [repr(f) for f in warnings.filters]
    s["showwarning"] = repr(warnings.showwarning)
    s["logging"] = {
        "root": [logging.root.level, len(logging.root.handlers)],
        "disable": logging.root.manager.disable,
        "levels": {
            n: [lg.level, len(lg.handlers), lg.propagate, lg.disabled]
            for n, lg in logging.root.manager.loggerDict.items()
            if isinstance(lg, logging.Logger)
        },
    }
    s["signals"] = [repr(signal.getsignal(sig)) for sig in (signal.SIGINT, signal.SIGTERM)]
    s["hooks"] = [repr(sys.excepthook), repr(threading.excepthook)]
    if "accelerate" in sys.modules:
        from accelerate.state import AcceleratorState, GradientState, PartialState

        s["accelerate"] = [
            sorted((k, repr(v)) for k, v in c._shared_state.items())
            for c in (PartialState, AcceleratorState, GradientState)
        ]
    if "matplotlib" in sys.modules:
        import matplotlib

        s["matplotlib"] = sorted((k, repr(v)) for k, v in dict.items(matplotlib.rcParams))
    return json.loads(json.dumps(s, default=repr))


def differences(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What changed, entry by entry. Loggers and module attributes that appear (modules imported meanwhile) are no
    change; those that were there must be as they were."""
    out: dict[str, Any] = {}
    for key in before.keys() | after.keys():
        a, b = before.get(key), after.get(key)
        if key == "logging":
            a, b = dict(a), dict(b)
            b["levels"] = {n: v for n, v in b["levels"].items() if n in a["levels"]}
        if key == "attributes":
            b = {m: {n: v for n, v in attrs.items() if n in a.get(m, {})} for m, attrs in b.items() if m in a}
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                out[key] = {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
            else:
                out[key] = (a, b)
    return out


IMPORT_CHECK = """
import json, pkgutil, sys
sys.path.insert(0, {tests!r})
import torch, transformers, matplotlib  # (the user's own imports: their state is what textdistill must leave alone)
import accelerate.state
from test_guest import differences, snapshot
before = snapshot()
import textdistill
alone = differences(before, snapshot())
for info in pkgutil.iter_modules(textdistill.__path__):
    if info.name != "__main__":
        __import__("textdistill." + info.name)
every = differences(before, snapshot())
print(json.dumps({{"alone": alone, "every": every}}))
"""


def test_importing_textdistill_changes_nothing_in_the_process() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK.format(tests=str(Path(__file__).parent))],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["alone"] == {}
    # every module of the package: only the Auto classes changed, by textdistill's own model types (documented)
    every = result["every"]
    assert set(every) <= {"auto classes"}, every
    for mapping, (old, new) in every.get("auto classes", {}).items():
        added = set(new) - set(old)
        assert (
            set(old) <= set(new)
            and added
            and all(a in OWN_MODEL_TYPES or a.startswith("<class 'textdistill.") for a in added)
        ), (mapping, added)


def guest_config(tiny_bert: str, sst2_dir: Path, out: Path) -> dict:
    """A tiny run that switches on everything process-wide textdistill does: fast CPU dropout and its attention
    function (teacher fine-tuning), attention maps distilled through textdistill's own attention function, the
    first-token cut, malloc thresholds, accelerate's settings, seeds."""
    fast = {"num_train_epochs": 1, "per_device_train_batch_size": 16, "learning_rate": 1e-3, "logging_steps": 5}
    return {
        "output_dir": str(out),
        "seed": 11,
        "data": {
            "train_file": str(sst2_dir / "train.tsv"),
            "validation_file": str(sst2_dir / "dev.tsv"),
            "max_length": 32,
            "max_train_samples": 64,
            "max_eval_samples": 32,
        },
        "teacher": {"model": tiny_bert, "finetune": True, "training": fast},
        "student": {"layers": [0, 3], "training": fast},
        "distill": {"baseline": False, "layer_map": [{"strategy": "last", "feature": "attention", "loss": "kl"}]},
        "eval": {"latency_repeats": 1, "latency_samples": 8},
    }


def test_distill_leaves_the_process_as_it_found_it(tiny_bert, sst2_dir, tmp_path) -> None:
    import contextlib

    import accelerate.state  # noqa: F401  (imported by the user: their state is compared)
    import matplotlib  # noqa: F401
    import torch
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    import textdistill
    import textdistill.multitask  # noqa: F401  (their Auto-class registrations stay, by design: made before)
    import textdistill.students  # noqa: F401
    from textdistill import dropout, features, train

    inside: list[set[str]] = []
    real = train.fast_cpu_dropout

    @contextlib.contextmanager
    def spy(model, enabled=True):  # what transformers' registry holds inside each loop
        with real(model, enabled) as swapped:
            inside.append(set(ALL_ATTENTION_FUNCTIONS.keys()))
            yield swapped

    torch.manual_seed(1234)
    expected = torch.rand(3)  # the user's own random stream, had textdistill not run
    torch.manual_seed(1234)
    before = snapshot()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "fast_cpu_dropout", spy)
        report = textdistill.distill(guest_config(tiny_bert, sst2_dir, tmp_path / "run"))
    after = snapshot()
    key = "malloc: a 256 MiB block from fresh pages"
    if before.get(key) is False:  # something earlier in this test process raised the thresholds itself: a mallopt
        (
            before.pop(key),
            after.pop(key),
        )  # no one can read back; the put-back is checked in a fresh process (test_cpu_malloc)
    assert differences(before, after) == {}
    assert torch.equal(torch.rand(3), expected)
    # the run did switch on what it then put back
    assert report["student"]["intermediate"]
    assert dropout.FAST_SDPA in inside[0] and features.MAPS_ATTENTION in inside[-1]  # teacher's loop, student's loop
    assert not {dropout.FAST_SDPA, features.MAPS_ATTENTION} & set(ALL_ATTENTION_FUNCTIONS.keys())


def test_a_calls_loading_policy_ends_with_the_call() -> None:
    """A config's loading policy (allow_pickle, trust_remote_code) holds for the models its command loads, and not
    for what the caller loads afterwards: the call runs in a copy of the caller's context variables."""
    from textdistill.models import _POLICY, set_loading_policy
    from textdistill.train import as_guest

    def command() -> bool:
        set_loading_policy(allow_pickle=True, trust_remote_code=True)
        return _POLICY.get().allow_pickle

    before = _POLICY.get()
    assert as_guest(command)() is True
    assert _POLICY.get() == before and not _POLICY.get().trust_remote_code
