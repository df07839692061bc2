"""BERT's WordPiece tokenisation in the TensorFlow graph, as the original tokenizer does it.

The original is the ``tokenizers`` pipeline that a BERT ``tokenizer.json`` describes:
``BertNormalizer`` (drop control characters, every kind of white space to a space, spaces
around CJK ideographs, NFD and drop non-spacing marks, lower-case), ``BertPreTokenizer``
(split on white space, every punctuation character its own word), greedy longest-match
``WordPiece`` (``##`` continuations; a word longer than 100 characters, or one with a
character no piece covers, is one ``[UNK]``) and ``[CLS] ... [SEP]`` around the pieces.

Ops: only two ops come from TF Text, ``NormalizeUTF8`` (NFD) and
``WordpieceTokenizeWithOffsets``, both in every TF Serving release that links TF Text
(``tensorflow_serving/model_servers:server_lib`` links ``@org_tensorflow_text//tensorflow_text:ops_lib``).
The ``FastBert*`` / ``FastWordpiece*`` ops are avoided: stock model servers before 2.12 do
not have them. Everything else is core TensorFlow (RE2 regex replace, whitespace split,
``StringLower``, hash-table lookup, ragged slicing). ``tests/text/test_minilm.py`` checks the ids
against the ``tokenizers`` package.

Known differences from the original, all on input no caption has: literal special-token
text (``"[SEP]"`` typed in a sentence) is split like any other text, where the original
maps it to the special id; characters that the TensorFlow build's Unicode tables and
the original's disagree on (code points assigned in a recent Unicode version).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import keras
import tensorflow as tf
import tensorflow_text as tf_text

CLS_TOKEN = "[CLS]"
SEP_TOKEN = "[SEP]"
PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
SUFFIX_INDICATOR = "##"
# The original's WordPiece `max_input_chars_per_word`: longer words become one [UNK].
MAX_CHARS_PER_WORD = 100

# Control and format characters (C*: Cc, Cf, Co, Cs) and unassigned code points (the
# complement of every assigned category; RE2 has no \p{Cn}) are dropped, as is U+FFFD,
# what invalid UTF-8 was replaced by. Tab, newline and carriage return are spaces.
_TAB_NEWLINE = r"[\t\n\r]"
_CONTROL = r"[\p{C}\x{FFFD}]|[^\p{L}\p{M}\p{N}\p{P}\p{S}\p{Z}\p{C}]"
_WHITE_SPACE = r"\p{Z}"
# The original's "Chinese character" blocks (CJK Unified Ideographs and extensions, and the
# compatibility ideographs); Hiragana, Katakana and Hangul are written with spaces: left as words.
_CJK_IDEOGRAPH = (
    r"([\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}"
    r"\x{2B740}-\x{2B81F}\x{2B920}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}])"
)
_NONSPACING_MARK = r"\p{Mn}"
# ASCII punctuation (which includes the symbols $+<=>^`|~) and every Unicode P* character.
_PUNCTUATION = r"([!-/:-@\[-`{-~]|\p{P})"
# StringLower lower-cases a word-final capital sigma to the final form (ICU's context rule);
# the original lower-cases one character at a time, to the plain sigma.
_CAPITAL_SIGMA = "\u03a3"
_SMALL_SIGMA = "\u03c3"


def bert_normalize(sentences: tf.Tensor, lower_case: bool = True, strip_accents: bool | None = None) -> tf.Tensor:
    """The original ``BertNormalizer``, in graph ops.

    Args:
        sentences: ``tf.string [...]``, UTF-8 (invalid bytes are dropped).
        lower_case: lower-case (after stripping accents, as the original).
        strip_accents: NFD and drop non-spacing marks; ``None`` follows ``lower_case``.

    Returns:
        ``tf.string`` of the same shape: no control characters, single-byte spaces,
        spaces around CJK ideographs.
    """
    if strip_accents is None:
        strip_accents = lower_case
    text = tf.strings.unicode_transcode(
        sentences, input_encoding="UTF-8", output_encoding="UTF-8", errors="replace", replacement_char=0xFFFD
    )
    text = tf.strings.regex_replace(text, _TAB_NEWLINE, " ")
    text = tf.strings.regex_replace(text, _CONTROL, "")
    text = tf.strings.regex_replace(text, _WHITE_SPACE, " ")
    text = tf.strings.regex_replace(text, _CJK_IDEOGRAPH, r" \1 ")
    if strip_accents:
        text = tf.strings.regex_replace(tf_text.normalize_utf8(text, "NFD"), _NONSPACING_MARK, "")
    if lower_case:
        text = tf.strings.lower(tf.strings.regex_replace(text, _CAPITAL_SIGMA, _SMALL_SIGMA), encoding="utf-8")
    return text


def bert_split_words(normalized: tf.Tensor) -> tf.RaggedTensor:
    """The original ``BertPreTokenizer``: white-space split, each punctuation character a word.

    Args:
        normalized: ``tf.string [B]`` from :func:`bert_normalize`.

    Returns:
        ``tf.string [B, (words)]``.
    """
    return tf.strings.split(tf.strings.regex_replace(normalized, _PUNCTUATION, r" \1 "))


def vocabulary_from_tokenizer_json(tokenizer_json: str | bytes) -> list[str]:
    """The WordPiece vocabulary of a ``tokenizer.json``, ordered by id.

    Args:
        tokenizer_json: the file's text.

    Returns:
        Token strings; entry ``i`` has id ``i``.

    Raises:
        ValueError: not a WordPiece tokenizer, or its ids are not ``0 .. N-1``.
    """
    model = json.loads(tokenizer_json)["model"]
    if model.get("type") != "WordPiece":
        raise ValueError(f"tokenizer.json: expected a WordPiece model, got {model.get('type')!r}")
    by_id = sorted(model["vocab"].items(), key=lambda item: item[1])
    if [token_id for _, token_id in by_id] != list(range(len(by_id))):
        raise ValueError("tokenizer.json: WordPiece ids are not 0 .. N-1")
    return [token for token, _ in by_id]


@keras.saving.register_keras_serializable(package="vse_tf")
class WordPieceTokenizer(keras.layers.Layer):
    """Raw sentences -> BERT token ids ``[CLS] pieces [SEP]``, padded with ``[PAD]``.

    Call args:
        sentences: ``tf.string [B]`` (any shape; flattened).

    Args:
        vocabulary: WordPiece tokens, entry ``i`` with id ``i`` (see
            :func:`vocabulary_from_tokenizer_json`); must hold the four special tokens.
        max_length: ids per sentence, ``[CLS]`` and ``[SEP]`` included; longer sentences
            keep their first ``max_length - 2`` pieces (the original's truncation).
        lower_case: lower-case and (with ``strip_accents=None``) strip accents.
        strip_accents: ``None`` follows ``lower_case``, as the original.
        pad_to_longest: pad to the batch's longest sentence instead of ``max_length``
            (serving: fewer positions for short sentences; the masked encoder gives the same
            embeddings).

    Returns:
        ``int64 [B, max_length]`` (``[B, longest]`` with ``pad_to_longest``).
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        max_length: int = 64,
        lower_case: bool = True,
        strip_accents: bool | None = None,
        pad_to_longest: bool = False,
        **kwargs,
    ):
        super().__init__(trainable=False, **kwargs)
        self.vocabulary = list(vocabulary)
        missing = [token for token in (CLS_TOKEN, SEP_TOKEN, PAD_TOKEN, UNK_TOKEN) if token not in self.vocabulary]
        if missing:
            raise ValueError(f"WordPiece vocabulary lacks the special token(s) {missing}")
        if max_length < 2:
            raise ValueError(f"max_length must leave room for [CLS] and [SEP], got {max_length}")
        self.max_length = int(max_length)
        self.lower_case = bool(lower_case)
        self.strip_accents = strip_accents
        self.pad_to_longest = bool(pad_to_longest)
        self.cls_id = self.vocabulary.index(CLS_TOKEN)
        self.sep_id = self.vocabulary.index(SEP_TOKEN)
        self.pad_id = self.vocabulary.index(PAD_TOKEN)
        self._table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(self.vocabulary, tf.string), tf.range(len(self.vocabulary), dtype=tf.int64)
            ),
            default_value=-1,
        )
        # Bytes are an upper bound of characters (<= 4 bytes each); the character limit is
        # applied exactly in `call`.
        self._wordpiece = tf_text.WordpieceTokenizer(
            self._table,
            suffix_indicator=SUFFIX_INDICATOR,
            max_bytes_per_word=4 * MAX_CHARS_PER_WORD,
            token_out_type=tf.int64,
            unknown_token=UNK_TOKEN,
        )
        self.built = True  # no weights: the vocabulary is fixed at construction

    @property
    def vocabulary_size(self) -> int:
        return len(self.vocabulary)

    def call(self, sentences):
        sentences = tf.reshape(tf.convert_to_tensor(sentences, dtype=tf.string), [-1])
        words = bert_split_words(bert_normalize(sentences, self.lower_case, self.strip_accents))
        too_long = tf.strings.length(words.flat_values, unit="UTF8_CHAR") > MAX_CHARS_PER_WORD
        words = words.with_flat_values(tf.where(too_long, UNK_TOKEN, words.flat_values))
        pieces = self._wordpiece.tokenize(words).merge_dims(1, 2)[:, : self.max_length - 2]
        rows = tf.shape(sentences, out_type=tf.int64)[0]
        ids = tf.concat(
            [
                tf.fill([rows, 1], tf.constant(self.cls_id, tf.int64)),
                pieces,
                tf.fill([rows, 1], tf.constant(self.sep_id, tf.int64)),
            ],
            axis=1,
        )
        length = None if self.pad_to_longest else self.max_length
        return ids.to_tensor(default_value=self.pad_id, shape=[None, length])

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None if self.pad_to_longest else self.max_length)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary": self.vocabulary,
            "max_length": self.max_length,
            "lower_case": self.lower_case,
            "strip_accents": self.strip_accents,
            "pad_to_longest": self.pad_to_longest,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("trainable", None)
        return cls(**config)
