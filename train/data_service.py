"""Run a tf.data service dispatcher or worker for ``--data.service grpc://HOST:PORT`` (see docs/scale.md).

    python -m train.data_service dispatcher --port 5050 [--work_dir /shared/dispatcher]
    python -m train.data_service worker --dispatcher HOST:5050 --port 5051 --worker_address THIS_HOST:5051

Runs until interrupted. A worker needs TensorFlow only: the trainer sends it the input
pipeline's graph, and it reads the shards (or image files) at the paths the trainer names.
"""

from __future__ import annotations

import argparse
import sys

from train.flags import add_verbose_flag, run_command


def main(argv: list[str] | None = None) -> int:
    return run_command(_serve, argv)


def _serve(argv: list[str]) -> int:
    # Imported here: module-level imports would load TensorFlow before run_command quietens it.
    from vse_tf.data.service import start_dispatcher, start_worker

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=("dispatcher", "worker"))
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free one)")
    parser.add_argument("--work_dir", default="", help="dispatcher: journal folder, so a restart recovers its jobs")
    parser.add_argument("--dispatcher", default="", help="worker: the dispatcher's HOST:PORT")
    parser.add_argument("--worker_address", default="", help="worker: HOST:PORT the trainers reach it at")
    add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if args.role == "dispatcher":
        server = start_dispatcher(args.port, args.work_dir)
        print(f"dispatcher: {server.target}", flush=True)
    else:
        if not args.dispatcher:
            parser.error("a worker needs --dispatcher HOST:PORT")
        server = start_worker(args.dispatcher, args.port, args.worker_address)
        print(f"worker of {args.dispatcher} on port {args.port}", flush=True)
    server.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())
