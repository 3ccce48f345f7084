"""Run any command and keep its raw results, so a number quoted in the README has a file behind it.

Writes ``bench/results/<name>.json``: the command, the git commit and dirty flag, the machine (CPU,
library versions, date, load), the exit code, wall time, the peak RSS of the largest process the
command ran, and the content of the JSON files it produced that the numbers come from (a run's
``summary.json``, ``eval_results.json``, ...).  For accuracy experiments such as the quickstart or
a fine-tuning comparison:

    python -m bench.record --name quickstart_sst2 \
        --collect runs/quickstart/pretrain/summary.json --collect runs/quickstart/finetune/eval_results.json \
        -- pipeline run --config configs/quickstart.yaml

``--collect`` takes paths or globs (relative to the current directory), read after the command ends;
a ``.jsonl`` file (a run's ``metrics.jsonl``) is kept as its list of records. The exit code is the
command's. Without a command it only collects: the outputs of runs made earlier, whose own results
file holds the command, commit and wall time that made them (say which in ``--note``).
"""

from __future__ import annotations

import argparse
import glob
import json
import resource
import subprocess
import sys
import time

from bench.common import machine_info, write_results


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="results file name: bench/results/<name>.json")
    parser.add_argument("--collect", action="append", default=[], help="JSON output to keep (path or glob)")
    parser.add_argument("--note", default="", help="what the run is for (stored with the results)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command to run")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command and not args.collect:
        parser.error("give the command to run after --, or --collect to keep earlier runs' outputs")
    return args


def collect(patterns: list[str]) -> dict[str, object]:
    """``{path: parsed JSON}`` of every file the patterns match (unreadable ones say why)."""
    found = {}
    for pattern in patterns:
        paths = sorted(glob.glob(pattern)) or [pattern]
        for path in paths:
            try:
                with open(path, encoding="utf-8") as f:
                    lines = path.endswith(".jsonl")
                    found[path] = [json.loads(line) for line in f if line.strip()] if lines else json.load(f)
            except (OSError, ValueError) as e:
                found[path] = {"error": f"{type(e).__name__}: {e}"}
    return found


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    machine = machine_info()
    start = time.perf_counter()
    code = subprocess.call(args.command) if args.command else 0
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux: KiB, largest process
    payload = {
        "note": args.note,
        "exit_code": code,
        "wall_s": round(wall, 2),
        "peak_rss_mb_largest_process": round(peak_kib / 1024, 1),
        "outputs": collect(args.collect),
    }
    write_results(args.name, payload, machine, command=args.command)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
