import json

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from export.index import main as index_main
from export.search import annotate_main, search_main
from vse_tf.model.dual_encoder import build_dual_encoder
from vse_tf.serving.export import export_towers
from vse_tf.serving.index import EmbeddingIndex, build_caption_index, build_image_index, top_k
from vse_tf.serving.index_store import load_index
from vse_tf.serving.model_card import WARMUP_FILE, read_warmup_requests
from vse_tf.serving.retrieval_model import export_retrieval_model
from vse_tf.text.tokenizer import SentenceTokenizer

VOCABULARY = ["a", "red", "green", "blue", "yellow", "block", "on", "the", "left", "right"]
CAPTIONS = ["a red block on the left", "a green block on the right", "a blue block", "a red block on the left"]


def test_top_k_matches_a_full_sort():
    rng = np.random.default_rng(0)
    queries, gallery = rng.normal(size=(4, 8)), rng.normal(size=(50, 8))
    indices, scores = top_k(queries, gallery, 7)
    full = np.argsort(-(queries @ gallery.T), axis=1)[:, :7]
    np.testing.assert_array_equal(indices, full)
    np.testing.assert_allclose(scores, np.take_along_axis(queries @ gallery.T, full, axis=1), rtol=1e-5)
    assert top_k(queries, gallery[:3], 10)[0].shape == (4, 3)


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    from conftest import write_tiny_karpathy

    root = tmp_path_factory.mktemp("gallery")
    data = root / "data"
    write_tiny_karpathy(data, {"test": 12})
    (data / "images" / "broken.jpg").write_bytes(b"this is not a jpeg")
    config = tiny_config(data, root / "run")
    model = build_dual_encoder(config, VOCABULARY)
    paths = export_towers(
        model.image_encoder, model.text_encoder, SentenceTokenizer(VOCABULARY, 8), config, root / "models"
    )
    image_index = build_image_index(paths["image_encoder"], data / "images", batch_size=5, progress=False)
    caption_index = build_caption_index(paths["text_encoder"], CAPTIONS, progress=False)
    return {"root": root, "data": data, "paths": paths, "images": image_index, "captions": caption_index}


def test_image_index_embeds_each_image_once_and_lists_the_unusable(gallery):
    index = gallery["images"]
    assert len(index.ids) == 12 and index.embeddings.shape == (12, 16)
    assert [name for name, _ in index.skipped] == ["broken.jpg"]
    assert "not a JPEG" in index.skipped[0][1]
    saved = EmbeddingIndex.load(index.save(gallery["root"] / "index"))
    assert saved.ids == index.ids and saved.skipped == index.skipped
    np.testing.assert_array_equal(saved.embeddings, index.embeddings)


def test_caption_index_dedupes_in_order(gallery):
    assert gallery["captions"].ids == tuple(dict.fromkeys(CAPTIONS))


def test_retrieval_model_matches_numpy_top_k(gallery, tmp_path):
    path = export_retrieval_model(
        tmp_path, version=1, k=3, image_index=gallery["images"], caption_index=gallery["captions"]
    )
    loaded = tf.saved_model.load(str(path))
    assert set(loaded.signatures) == {"serving_default", "search", "annotate"}
    text = tf.saved_model.load(str(gallery["paths"]["text_encoder"])).signatures["serving_default"]
    sentences = ["a red block on the left", "yellow right"]
    queries = text(sentences=tf.constant(sentences))["embeddings"].numpy()
    want_rows, want_scores = top_k(queries, gallery["images"].embeddings, 3)
    result = loaded.signatures["search"](sentences=tf.constant(sentences))
    got_ids = result["ids"].numpy().astype(str)
    np.testing.assert_array_equal(got_ids, np.array(gallery["images"].ids)[want_rows])
    np.testing.assert_allclose(result["scores"].numpy(), want_scores, atol=1e-5)
    image_bytes = (gallery["data"] / "images" / gallery["images"].ids[0]).read_bytes()
    annotated = loaded.signatures["annotate"](images=tf.constant([image_bytes]))
    assert annotated["ids"].shape == (1, 3) and annotated["ids"].numpy()[0, 0].decode() in CAPTIONS
    for signature, inputs in read_warmup_requests(path / "assets.extra" / WARMUP_FILE):
        loaded.signatures[signature](**{name: tf.constant(value) for name, value in inputs.items()})
    card = json.loads((path / "assets.extra" / "model_card.json").read_text())
    assert card["custom_ops"] == [] and card["limits"] == {"k": 3}
    with pytest.raises(FileExistsError):
        export_retrieval_model(tmp_path, version=1, image_index=gallery["images"])


def test_index_search_and_annotate_command_lines(gallery, tmp_path, capsys):
    index_dir, captions_dir = tmp_path / "images_index", tmp_path / "captions_index"
    captions_file = tmp_path / "captions.txt"
    captions_file.write_text("\n".join(CAPTIONS) + "\n\n")
    images = gallery["data"] / "images"
    assert (
        index_main(
            ["--images", str(images), "--model", str(gallery["paths"]["image_encoder"]), "--out", str(index_dir)]
        )
        == 0
    )
    assert (
        index_main(
            [
                "--captions",
                str(captions_file),
                "--model",
                str(gallery["paths"]["text_encoder"]),
                "--out",
                str(captions_dir),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert search_main(["a red block on the left", "--index", str(index_dir), "--k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "a red block on the left" and out[1].strip().startswith("1.") and out[2].strip().startswith("2.")
    assert (
        annotate_main(
            [
                str(images / "img_0000.png"),
                str(images / "broken.jpg"),
                "--captions_index",
                str(captions_dir),
                "--k",
                "1",
            ]
        )
        == 1
    )
    captured = capsys.readouterr()
    assert any(caption in captured.out for caption in CAPTIONS)
    assert "broken.jpg" in captured.err
    # querybank normalisation: the captions index is the bank of the sentence queries
    bank_args = ["--querybank", str(captions_dir), "--qb_beta", "10"]
    assert search_main(["a red block on the left", "--index", str(index_dir), "--k", "3", *bank_args]) == 0
    printed = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    index = load_index(index_dir)
    bank = load_index(captions_dir).gallery.embeddings.astype(np.float64)
    query = (
        tf.saved_model.load(str(gallery["paths"]["text_encoder"]))
        .signatures["serving_default"](sentences=tf.constant(["a red block on the left"]))["embeddings"]
        .numpy()[0]
    )
    items = index.gallery.embeddings.astype(np.float64)
    offsets = np.log(np.exp(10 * items @ bank.T).sum(axis=1)) / 10  # float64 reference of the inverted softmax
    expected = np.argsort(-(items @ query - offsets), kind="stable")[:3]
    assert [row[2] for row in printed] == [index.gallery.ids[row] for row in expected]
    with pytest.raises(SystemExit):  # a bank of images for sentence queries
        search_main(["a red block", "--index", str(index_dir), "--querybank", str(index_dir)])
    assert "--querybank" in capsys.readouterr().err


def test_retrieval_command_over_an_ivf_index_searches_its_lists(gallery, tmp_path, capsys):
    from export.retrieval import main as retrieval_main

    index_dir = tmp_path / "ivf_index"
    model = str(gallery["paths"]["image_encoder"])
    flags = ["--backend", "ivf", "--nlist", "3", "--nprobe", "3"]  # every list probed: the exact top-k
    assert (
        index_main(["--images", str(gallery["data"] / "images"), "--model", model, "--out", str(index_dir), *flags])
        == 0
    )
    assert retrieval_main(["--image_index", str(index_dir), "--out", str(tmp_path / "models"), "--k", "4"]) == 0
    assert "retrieval:" in capsys.readouterr().out
    loaded = tf.saved_model.load(str(tmp_path / "models" / "retrieval" / "1"))
    text = tf.saved_model.load(str(gallery["paths"]["text_encoder"])).signatures["serving_default"]
    sentences = ["a red block on the left", "blue right"]
    queries = text(sentences=tf.constant(sentences))["embeddings"].numpy()
    index = load_index(index_dir)
    scores = queries.astype(np.float64) @ index.gallery.embeddings.astype(np.float64).T
    expected = np.array(index.gallery.ids)[np.argsort(-scores, axis=1, kind="stable")[:, :4]]
    found = loaded.signatures["search"](sentences=tf.constant(sentences))["ids"].numpy().astype(str)
    np.testing.assert_array_equal(found, expected)
    tuned = loaded.signatures["search_tuned"](
        sentences=tf.constant(sentences), nprobe=tf.constant(1, tf.int32), k=tf.constant(2, tf.int32)
    )
    assert tuned["ids"].shape == (2, 2)
