"""``train_mirrored.py WORK_DIR``: train() under MirroredStrategy on two logical CPU devices.

Prints the training summary and the test metrics as one JSON line.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

(cpu,) = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import tiny_config, write_tiny_karpathy  # noqa: E402

from vse_tf.evaluation.encode import evaluate_run  # noqa: E402
from vse_tf.training.trainer import train  # noqa: E402

work = Path(sys.argv[1])
write_tiny_karpathy(work / "tiny", {"train": 32, "val": 8, "test": 10})
run = train(tiny_config(work / "tiny", work / "run", strategy="mirrored", epochs=1), verbose=0)
summary = json.loads((work / "run" / "training_summary.json").read_text())
print(json.dumps({"summary": summary, "metrics": evaluate_run(run, "test")}))
