"""Dataset readers (file formats in, plain records out) and generators."""
