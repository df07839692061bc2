"""Pretrained image backbones written as Keras functional models, and their weight converters."""
