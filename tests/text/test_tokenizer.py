import numpy as np
import pytest
import tensorflow as tf

from vse_tf.text.tokenizer import SentenceTokenizer, build_vocabulary, load_vocabulary, save_vocabulary, split_words


def test_split_words_lowercases_and_drops_punctuation_but_keeps_other_scripts():
    assert split_words(["A Small, RED circle!", "Éclair café", "猫 is 猫", ""]) == [
        ["a", "small", "red", "circle"],
        ["éclair", "café"],
        ["猫", "is", "猫"],
        [],
    ]


def test_vocabulary_is_ordered_by_frequency_then_word_and_honours_min_count():
    sentences = ["b a", "a c", "a b", "d"]
    assert build_vocabulary(sentences) == ["a", "b", "c", "d"]
    assert build_vocabulary(sentences, min_count=2) == ["a", "b"]


def test_tokenizer_pads_truncates_and_maps_unknown_words():
    tokenizer = SentenceTokenizer(["a", "red", "circle"], max_length=3)
    ids = tokenizer(tf.constant(["A red circle left of", "", "purple circle", "\xff\xfe bad utf8".encode("latin-1")]))
    # an empty sentence is the one unknown word (id 1), so it still embeds to a unit vector
    np.testing.assert_array_equal(ids.numpy(), [[2, 3, 4], [1, 0, 0], [1, 4, 0], [1, 1, 1]])
    assert tokenizer.vocabulary_size == 5


def test_tokenizer_config_round_trip():
    tokenizer = SentenceTokenizer(["x", "y"], max_length=4, name="tok")
    clone = SentenceTokenizer.from_config(tokenizer.get_config())
    sentences = tf.constant(["y x z", "x"])
    np.testing.assert_array_equal(clone(sentences).numpy(), tokenizer(sentences).numpy())
    assert clone.name == "tok"


def test_vocabulary_file_round_trip(tmp_path):
    words = ["a", "猫", "[weird]"]
    save_vocabulary(words, tmp_path / "vocabulary.txt")
    assert load_vocabulary(tmp_path / "vocabulary.txt") == words


@pytest.mark.parametrize("sentences", [[], ["   "]])
def test_empty_inputs(sentences):
    assert build_vocabulary(sentences) == []


def test_pad_to_longest_pads_only_as_far_as_needed():
    tokenizer = SentenceTokenizer(["a", "red", "circle"], max_length=5, pad_to_longest=True)
    np.testing.assert_array_equal(tokenizer(tf.constant(["a red", "circle"])).numpy(), [[2, 3], [4, 0]])
    np.testing.assert_array_equal(tokenizer(tf.constant(["", " ", "?!"])).numpy(), [[1], [1], [1]])
    assert tokenizer(tf.constant(["a " * 9])).shape == (1, 5)
    assert SentenceTokenizer.from_config(tokenizer.get_config()).pad_to_longest
