"""Reporting skipped input during training: one log line and ``<run_dir>/skipped.json``."""

from __future__ import annotations

from pathlib import Path

import keras

from vse_tf.data.pipeline import DecodeTracker
from vse_tf.data.records import RetrievalSplit
from vse_tf.data.skips import SkipLog

SKIPPED_FILE = "skipped.json"


def report_skips(skips: SkipLog, run_dir: Path, verbose: bool = True) -> Path:
    """Prints ``skips``' summary line (when ``verbose``) and writes ``run_dir/skipped.json``."""
    if verbose:
        print(skips.summary("input"), flush=True)
    return skips.write(Path(run_dir) / SKIPPED_FILE)


class DecodeFailureReport(keras.callbacks.Callback):
    """After the first epoch, counts the training images the tf.data safety net dropped.

    The screening should catch every unusable file; an image TensorFlow still failed to
    decode is counted (with its captions) as ``decode_failed`` and the report rewritten.
    """

    def __init__(
        self, tracker: DecodeTracker, split: RetrievalSplit, skips: SkipLog, run_dir: Path, verbose: bool = True
    ) -> None:
        super().__init__()
        self.tracker = tracker
        self.split = split
        self.skips = skips
        self.run_dir = run_dir
        self.verbose = verbose
        self.checked = False

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        if self.checked:
            return
        self.checked = True
        failed = set(self.tracker.failed())
        if not failed:
            return
        captions = [0] * self.split.num_images
        for image in self.split.caption_to_image:
            captions[image] += 1
        for index, ref in enumerate(self.split.image_refs):
            if ref in failed:
                self.skips.skip("decode_failed", ref, records=captions[index])
        report_skips(self.skips, self.run_dir, self.verbose)
