"""Runs ``train.fit`` and SIGKILLs itself at a named moment of the first epoch it trains.

    python tests/scripts/train_killed_at.py MOMENT [train.fit flags...]

MOMENT is ``none`` (run to the end) or one of:

- ``batch:K``: after the K-th optimizer step of this process;
- ``validation``: in the first validation, embeddings computed, metrics not yet;
- ``backup_write``: the first backup written to its temporary file, not yet renamed;
- ``before_best``: the first epoch committed (backup renamed), its best checkpoint not yet written;
- ``best_write``: the first best checkpoint written to its temporary file, not yet renamed;
- ``best_copy``: the first best checkpoint renamed, its ``.json`` copy not yet written;
- ``finish``: training done, summary written, the backup not yet removed.

The best-checkpoint moments fall back to killing right after the first commit when that
epoch is no new best, so every moment but ``finish`` kills within the first epoch this
process trains. Exits with ``train.fit``'s status when nothing killed it.
"""

from __future__ import annotations

import os
import signal
import sys


def kill() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(moment: str) -> None:
    """Wraps the library function where ``moment`` happens with one that kills the process."""
    from vse_tf.training import callbacks, checkpoints, trainer

    name, _, count = moment.partition(":")
    if name == "batch":
        steps = {"seen": 0}
        original_batch_end = callbacks.StopOnNaN.on_train_batch_end

        def on_train_batch_end(self, batch, logs=None):
            original_batch_end(self, batch, logs)
            steps["seen"] += 1
            if steps["seen"] == int(count):
                kill()

        callbacks.StopOnNaN.on_train_batch_end = on_train_batch_end
    elif name == "validation":
        original_evaluate = callbacks.evaluate_retrieval
        callbacks.evaluate_retrieval = lambda *args, **kwargs: kill() or original_evaluate(*args, **kwargs)
    elif name in ("backup_write", "best_write"):
        target = "latest.weights.h5" if name == "backup_write" else "best.weights.h5"
        original_attach = checkpoints.attach_record

        def attach_record(path, record):
            original_attach(path, record)
            if path.name.endswith(target):
                kill()

        checkpoints.attach_record = attach_record
    elif name == "before_best":
        callbacks.BestCheckpoint.save = lambda *args, **kwargs: kill()
    elif name == "best_copy":
        callbacks.BestCheckpoint.write_copy = lambda *args, **kwargs: kill()
    elif name == "finish":
        trainer.remove_backup = lambda *args, **kwargs: kill()
    elif name != "none":
        raise SystemExit(f"unknown moment {moment!r}")
    if name in ("before_best", "best_write", "best_copy"):
        original_commit = callbacks.EpochCommit.on_epoch_end

        def on_epoch_end(self, epoch, logs=None):
            original_commit(self, epoch, logs)
            kill()  # the epoch was no new best: the moment did not come

        callbacks.EpochCommit.on_epoch_end = on_epoch_end


def main() -> int:
    moment, *flags = sys.argv[1:]
    install(moment)
    from train.fit import main as fit

    return fit(flags)


if __name__ == "__main__":
    sys.exit(main())
