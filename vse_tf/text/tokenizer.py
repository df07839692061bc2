"""Sentence tokenisation shared by the training pipeline and the exported text tower.

Only core TensorFlow string ops are used (lower, regex_replace, split, hash-table
lookup), so an exported text tower runs in any TF runtime, stock TF Serving included.
Chinese and Japanese, written without spaces, are split into characters in the same
graph: an RE2 pattern puts spaces around every Han, Hiragana and Katakana character
(tests check this against TF Text's ``UnicodeScriptTokenizer`` + character split).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Sequence

import keras
import tensorflow as tf

from vse_tf.files import write_text_atomic

PAD_TOKEN = ""
OOV_TOKEN = "[UNK]"
# ASCII and Unicode punctuation (。，“” ...) become word breaks; letters of every script stay.
_PUNCTUATION = r"[[:punct:]\p{P}]"
# Scripts written without spaces: each character is a token (Hangul is spaced: left as words).
_CHARACTER_SCRIPTS = r"([\p{Han}\p{Hiragana}\p{Katakana}])"


def standardize(sentences: tf.Tensor) -> tf.Tensor:
    """Lower-cases (Unicode-aware), turns punctuation into spaces, spaces out CJK characters.

    Invalid UTF-8 bytes are replaced rather than failing the batch; a NUL byte is a word
    break (a space), in training and serving alike (the UTF-8 transcoder would otherwise
    end the sentence there).

    Args:
        sentences: ``tf.string [...]``.

    Returns:
        ``tf.string`` of the same shape.
    """
    spaced = tf.strings.regex_replace(sentences, r"\x00", " ")
    valid = tf.strings.unicode_transcode(spaced, input_encoding="UTF-8", output_encoding="UTF-8", errors="replace")
    lowered = tf.strings.lower(valid, encoding="utf-8")
    unpunctuated = tf.strings.regex_replace(lowered, _PUNCTUATION, " ")
    return tf.strings.regex_replace(unpunctuated, _CHARACTER_SCRIPTS, r" \1 ")


def split_words(sentences: Sequence[str]) -> list[list[str]]:
    """The tokens the text tower sees for each sentence, before the vocabulary lookup."""
    if not sentences:
        return []
    standardized = standardize(tf.constant(list(sentences), dtype=tf.string))
    words = tf.strings.split(standardized).to_list()
    return [[word.decode("utf-8") for word in sentence] for sentence in words]


def build_vocabulary(sentences: Iterable[str], min_count: int = 1) -> list[str]:
    """Words of the (training) sentences seen at least ``min_count`` times.

    Ordered by decreasing frequency, then alphabetically, so that the same captions
    always give the same vocabulary. Padding and OOV are not included.
    """
    counts: collections.Counter[str] = collections.Counter()
    batch: list[str] = []
    for sentence in sentences:
        batch.append(sentence)
        if len(batch) == 4096:
            counts.update(word for words in split_words(batch) for word in words)
            batch = []
    counts.update(word for words in split_words(batch) for word in words)
    kept = [(word, count) for word, count in counts.items() if count >= min_count and word != OOV_TOKEN]
    return [word for word, _ in sorted(kept, key=lambda item: (-item[1], item[0]))]


@dataclasses.dataclass(frozen=True)
class TextCoverage:
    """How much of a text a vocabulary knows: distinct words and running words (tokens)."""

    words: int
    known_words: int
    tokens: int
    known_tokens: int

    def describe(self, label: str) -> str:
        """``test text: 561 of 707 distinct words in the vocabulary (79.4%), 98.1% of 9,876 words``."""
        word_share = 100 * self.known_words / self.words if self.words else 0.0
        token_share = 100 * self.known_tokens / self.tokens if self.tokens else 0.0
        return (
            f"{label}: {self.known_words} of {self.words} distinct words in the vocabulary ({word_share:.1f}%), "
            f"{token_share:.1f}% of {self.tokens:,} words"
        )


def text_coverage(vocabulary: Iterable[str], sentences: Sequence[str]) -> TextCoverage:
    """Which of the sentences' words (as the tokenizer splits them) the vocabulary holds."""
    known = set(vocabulary)
    counts: collections.Counter[str] = collections.Counter()
    for start in range(0, len(sentences), 4096):
        counts.update(word for words in split_words(list(sentences[start : start + 4096])) for word in words)
    return TextCoverage(
        words=len(counts),
        known_words=sum(1 for word in counts if word in known),
        tokens=sum(counts.values()),
        known_tokens=sum(count for word, count in counts.items() if word in known),
    )


@keras.saving.register_keras_serializable(package="vse_tf")
class SentenceTokenizer(keras.layers.Layer):
    """Raw sentences -> padded token ids.

    Id 0 is padding, id 1 is out-of-vocabulary, words start at 2. A sentence with no words
    (empty, blank, or punctuation only) becomes the single word ``[UNK]``, so that every
    sentence embeds to a unit vector: the embedding of the unknown word.

    Call args:
        sentences: ``tf.string [batch]``.

    Args:
        vocabulary: the words, most frequent first (ids follow this order).
        max_length: longer sentences are truncated to this many words.
        pad_to_longest: pad to the batch's longest sentence (at most ``max_length``)
            instead of always to ``max_length``; the text tower gives the same embeddings
            either way, in fewer GRU steps.

    Returns:
        ``int64 [batch, max_length]`` (or ``[batch, longest]``).
    """

    def __init__(self, vocabulary: Sequence[str], max_length: int, pad_to_longest: bool = False, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.vocabulary = list(vocabulary)
        self.max_length = int(max_length)
        self.pad_to_longest = bool(pad_to_longest)
        self._lookup = keras.layers.StringLookup(
            vocabulary=self.vocabulary, mask_token=PAD_TOKEN, oov_token=OOV_TOKEN, num_oov_indices=1
        )
        self.built = True  # no weights: the vocabulary is fixed at construction

    @property
    def vocabulary_size(self) -> int:
        """Number of ids, padding and OOV included."""
        return len(self.vocabulary) + 2

    def call(self, sentences):
        sentences = tf.convert_to_tensor(sentences, dtype=tf.string)
        words = _unknown_word_for_empty(tf.strings.split(standardize(tf.reshape(sentences, [-1]))))
        if not self.pad_to_longest:
            return self._lookup(words.to_tensor(default_value=PAD_TOKEN, shape=[None, self.max_length]))
        # Serving: fewer GRU steps for short sentences; masking makes the result the same.
        padded = words[:, : self.max_length].to_tensor(default_value=PAD_TOKEN)
        at_least_one = tf.maximum(0, 1 - tf.shape(padded)[1])
        return self._lookup(tf.pad(padded, [[0, 0], [0, at_least_one]], constant_values=PAD_TOKEN))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None if self.pad_to_longest else self.max_length)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary": self.vocabulary,
            "max_length": self.max_length,
            "pad_to_longest": self.pad_to_longest,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("trainable", None)
        return cls(**config)


def _unknown_word_for_empty(words: tf.RaggedTensor) -> tf.RaggedTensor:
    """``[batch, (words)]`` with ``[OOV_TOKEN]`` as the one word of every empty row."""
    missing = tf.cast(tf.equal(words.row_lengths(), 0), words.row_splits.dtype)
    filler = tf.RaggedTensor.from_row_lengths(tf.fill([tf.reduce_sum(missing)], OOV_TOKEN), missing)
    return tf.concat([words, filler], axis=1)


def save_vocabulary(vocabulary: Sequence[str], path) -> None:
    """One word a line, UTF-8."""
    write_text_atomic(path, "".join(f"{word}\n" for word in vocabulary))


def load_vocabulary(path) -> list[str]:
    """Reads a file written by :func:`save_vocabulary`."""
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\n") for line in handle if line.rstrip("\n")]
