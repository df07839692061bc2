import numpy as np
import pytest

from vse_tf.data.synthetic.shapes import COLOURS, SHAPES
from vse_tf.evaluation.arithmetic import combine, scene_objects, swap_rate

WORDS = list(COLOURS) + list(SHAPES) + ["small", "big"]


def one_hot(word: str) -> np.ndarray:
    vector = np.zeros(len(WORDS), np.float32)
    vector[WORDS.index(word)] = 1.0
    return vector


def ideal_embedding(description: str) -> np.ndarray:
    """An image vector that is the sum of its objects' word vectors: arithmetic is exact."""
    total = sum(one_hot(word) for scene_object in scene_objects(description) for word in scene_object)
    return total / np.linalg.norm(total)


def test_scene_objects_parses_both_kinds_of_description():
    assert scene_objects("small red circle | left of | big blue star") == [
        ("small", "red", "circle"),
        ("big", "blue", "star"),
    ]
    assert scene_objects("big pink square | top left") == [("big", "pink", "square")]


def test_combine_gives_unit_rows():
    rows = combine(np.eye(3)[:2], np.eye(3)[0], np.eye(3)[2])
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0)
    np.testing.assert_allclose(rows[0], [0, 0, 1])


@pytest.mark.parametrize("attribute", ["colour", "shape"])
def test_swaps_succeed_on_an_ideal_space_and_chance_is_the_share_of_targets(attribute):
    rng = np.random.default_rng(0)
    descriptions = [f"small {colour} {shape} | top left" for colour in COLOURS for shape in SHAPES]
    embeddings = np.stack([ideal_embedding(text) for text in descriptions])
    values = list(COLOURS) if attribute == "colour" else list(SHAPES)
    result = swap_rate(embeddings, descriptions, {word: one_hot(word) for word in values}, attribute)
    assert result.queries == len(descriptions) * (len(values) - 1)
    assert result.success_rate == pytest.approx(100.0)
    # exactly one other image holds the target (colour, shape) pair
    assert result.chance_rate == pytest.approx(100.0 / (len(descriptions) - 1))
    noise = rng.normal(size=embeddings.shape).astype(np.float32)
    random = swap_rate(noise, descriptions, {w: rng.normal(size=len(WORDS)) for w in values}, attribute)
    assert random.success_rate < 20.0
