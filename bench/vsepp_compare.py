"""vse_tf's training step against VSE++'s PyTorch step, timed alternately in one run.

    python bench/vsepp_compare.py [--runs 3] [--steps 20] [--lengths 8:14] [--sort_window 8] [--xla off]

Runs ``bench/train.py --lengths ... --sort_window ... --xla ...`` and ``bench/vsepp_step.py
--lengths ...`` (2 threads) ``--runs`` times each as separate processes, alternating and
swapping which goes first every round (A B, B A, A B, ...), so that a shared machine's drift
hits both alike. Reports each side's median steps/s, pairs/s and tokens/s, vse_tf's median
fraction of its measured matmul rate, and the ratio of the medians (vse_tf / VSE++; the
median of the per-round ratios too). Writes bench/results/vsepp_compare.json
(``--xla on``: vsepp_compare_xla.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from results_file import write_results

HERE = Path(__file__).resolve().parent


def run_json(script: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(HERE / script), *args, "--json", "--no-write"], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lengths", default="8:14")
    parser.add_argument("--sort_window", type=int, default=8)
    parser.add_argument("--xla", choices=("off", "on"), default="off")
    args = parser.parse_args(argv)
    ours_args = ["--steps", str(args.steps), "--lengths", args.lengths]
    ours_args += ["--sort_window", str(args.sort_window), "--xla", args.xla]
    theirs_args = ["--steps", str(args.steps), "--lengths", args.lengths, "--threads", "2"]
    ours, theirs = [], []
    for round_ in range(args.runs):
        order = ("ours", "theirs") if round_ % 2 == 0 else ("theirs", "ours")
        for side in order:
            if side == "ours":
                result = run_json("train.py", *ours_args)
                ours.append(result["rows"][0] | {"matmul_gflops": result["matmul_gflops"]})
            else:
                theirs.append(run_json("vsepp_step.py", *theirs_args))
            latest = ours[-1] if side == "ours" else theirs[-1]
            print(f"round {round_ + 1} {side:<6} {latest['steps_per_s']:.2f} steps/s", flush=True)

    def median(rows, key):
        return statistics.median(row[key] for row in rows)

    ratio = median(ours, "steps_per_s") / median(theirs, "steps_per_s")
    per_round = statistics.median(a["steps_per_s"] / b["steps_per_s"] for a, b in zip(ours, theirs))
    print(f"medians of {args.runs} runs each ({args.lengths} tokens, sort window {args.sort_window}, XLA {args.xla}):")
    print(f"{'':<8} {'steps/s':>8} {'pairs/s':>9} {'tokens/s':>9} {'of matmul':>10}")
    for name, rows in (("vse_tf", ours), ("VSE++", theirs)):
        print(
            f"{name:<8} {median(rows, 'steps_per_s'):8.2f} {median(rows, 'pairs_per_s'):9.0f} "
            f"{median(rows, 'tokens_per_s'):9.0f} {100 * median(rows, 'fraction_of_matmul'):9.0f}%"
        )
    print(f"ratio vse_tf / VSE++: {ratio:.2f}x (median of the per-round ratios {per_round:.2f}x)")
    path = write_results(
        "vsepp_compare_xla" if args.xla == "on" else "vsepp_compare",
        {
            "runs": args.runs,
            "steps": args.steps,
            "lengths": args.lengths,
            "sort_window": args.sort_window,
            "xla": args.xla,
            "vse_tf": ours,
            "vsepp": theirs,
            "median_steps_per_s": {"vse_tf": median(ours, "steps_per_s"), "vsepp": median(theirs, "steps_per_s")},
            "ratio_of_medians": ratio,
            "median_round_ratio": per_round,
        },
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
