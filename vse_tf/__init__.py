"""vse_tf: visual-semantic embeddings with Keras 3 on TensorFlow.

Two towers map images and sentences into one space; a triplet ranking loss trains them
with ``model.fit``; each tower exports as its own SavedModel for TF Serving.
"""

__version__ = "0.1.0"
