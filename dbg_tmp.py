import sys; sys.path.insert(0,"tests")
import warnings, tempfile
from pathlib import Path
from conftest import tiny_config, write_tiny_karpathy
from vse_tf.training.trainer import train
tmp=Path(tempfile.mkdtemp()); write_tiny_karpathy(tmp/"tiny", {"train": 32, "val": 8, "test": 10})
warnings.simplefilter("always")
train(tiny_config(tmp/"tiny", tmp/"run"), verbose=0)
