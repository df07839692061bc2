"""Chinese (and Japanese) text: characters as tokens, in core TF ops, checked against TF Text."""

import json
import unicodedata
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_text as tf_text
from conftest import tiny_config
from PIL import Image

from vse_tf.data.pipeline import training_dataset
from vse_tf.data.splits import load_split
from vse_tf.model.dual_encoder import build_dual_encoder
from vse_tf.model.optimizer import build_optimizer
from vse_tf.serving.export import export_towers
from vse_tf.text.tokenizer import SentenceTokenizer, build_vocabulary, split_words

MIXED = [
    "一个红色的方块在左边。",
    "A red block, 在左边!",
    "深度学习(deep learning)很有趣",
    "“引号”和，逗号；还有？问号",
    "3个苹果 and 2 pears",
    "ひらがなとカタカナ、漢字",
    "한국어 문장 test",
    "Ünïcode café, naïve",
    "",
    "   ",
]
# ICU script codes (tf.strings.unicode_script): written without spaces, one token a character.
_CHARACTER_SCRIPTS = {17, 20, 22}  # Han, Hiragana, Katakana


def reference_tokens(sentence: str) -> list[str]:
    """TF Text's UnicodeScriptTokenizer, then characters for Han/kana runs; punctuation dropped."""
    lowered = tf.strings.lower(tf.constant([sentence]), encoding="utf-8")
    tokens = tf_text.UnicodeScriptTokenizer().tokenize(lowered).to_list()[0]
    result = []
    for token in tokens:
        characters = tf.strings.unicode_split(token, "UTF-8").numpy().tolist()
        scripts = tf.strings.unicode_script(tf.strings.unicode_decode(token, "UTF-8")).numpy().tolist()
        if all(_is_punctuation(character.decode()) for character in characters):
            continue
        if scripts[0] in _CHARACTER_SCRIPTS:
            result.extend(character.decode() for character in characters)
        else:
            result.append(token.decode())
    return result


def _is_punctuation(character: str) -> bool:
    return unicodedata.category(character).startswith("P")


@pytest.mark.parametrize("sentence", MIXED)
def test_in_graph_splitting_agrees_with_tf_text(sentence):
    assert split_words([sentence])[0] == reference_tokens(sentence)


def test_chinese_vocabulary_is_characters_and_unknown_characters_map_to_oov():
    vocabulary = build_vocabulary(["红色方块", "绿色方块在右边"])
    assert set(vocabulary) == set("红色方块绿在右边")
    tokens = SentenceTokenizer(vocabulary, 6)(tf.constant(["红色的圆"])).numpy()[0]
    ids = {word: index + 2 for index, word in enumerate(vocabulary)}
    assert tokens.tolist() == [ids["红"], ids["色"], 1, 1, 0, 0]  # 的, 圆 unknown; padding


COLOURS_ZH = {"红色": (220, 30, 30), "绿色": (30, 200, 40), "蓝色": (30, 60, 220), "黄色": (230, 220, 30)}
PLACES_ZH = {"左边": (0, 8), "右边": (8, 16)}


def write_chinese_karpathy(root: Path, images_per_split: dict[str, int], size: int = 16) -> Path:
    """The tiny block dataset with Chinese captions: '左边有一个红色方块', ..."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    entries, index = [], 0
    for split, count in images_per_split.items():
        for _ in range(count):
            colour = list(COLOURS_ZH)[index % 4]
            place = list(PLACES_ZH)[(index // 4) % 2]
            pixels = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
            start, stop = PLACES_ZH[place]
            pixels[:, start:stop] = COLOURS_ZH[colour]
            Image.fromarray(pixels).save(root / "images" / f"img_{index:04d}.png")
            captions = [f"{place}有一个{colour}方块。", f"{colour}的方块在{place}", f"方块：{colour}，{place}"]
            entries.append(
                {
                    "filename": f"img_{index:04d}.png",
                    "imgid": index,
                    "split": split,
                    "category": colour,
                    "sentences": [{"raw": caption, "tokens": list(caption)} for caption in captions],
                }
            )
            index += 1
    (root / "dataset_tiny.json").write_text(json.dumps({"dataset": "tiny", "images": entries}, ensure_ascii=False))
    return root


def test_training_and_export_on_a_chinese_dataset(tmp_path):
    data_dir = write_chinese_karpathy(tmp_path / "zh", {"train": 32, "val": 8, "test": 8})
    config = tiny_config(data_dir, tmp_path / "run")
    split = load_split(config, "train")
    vocabulary = build_vocabulary(split.captions)
    assert {"红", "色", "左", "边", "方", "块"} <= set(vocabulary) and "红色" not in vocabulary
    tokenizer = SentenceTokenizer(vocabulary, config.text.max_length)
    keras.utils.set_random_seed(0)
    model = build_dual_encoder(config, vocabulary)
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=4))
    dataset = training_dataset(split, tokenizer, config)
    before = model.evaluate(dataset, verbose=0)
    history = model.fit(dataset, epochs=2, shuffle=False, verbose=0).history["loss"]
    assert np.all(np.isfinite(history)) and model.evaluate(dataset, verbose=0) < before

    paths = export_towers(model.image_encoder, model.text_encoder, tokenizer, config, tmp_path / "models")
    card = json.loads((paths["text_encoder"] / "assets.extra" / "model_card.json").read_text())
    assert card["custom_ops"] == []  # the CJK splitting is a core RE2 regex, not a TF Text op
    serve = tf.saved_model.load(str(paths["text_encoder"])).signatures["serving_default"]
    sentences = ["左边有一个红色方块。", "蓝色的方块在右边", "red 方块"]
    np.testing.assert_allclose(
        serve(sentences=tf.constant(sentences))["embeddings"].numpy(),
        model.text_encoder(tokenizer(tf.constant(sentences))).numpy(),
        atol=1e-5,
    )
