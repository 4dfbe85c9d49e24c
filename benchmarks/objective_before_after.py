"""The objective's forward + backward at an earlier commit and at the working tree, back to back.

Each (side, implementation, B, posterior width) runs ``objective_speed.py --one`` in a fresh
process; the sides alternate call by call and the whole set repeats ``--rounds`` times, so that
a shared machine's drift falls on both sides alike. The earlier commit is checked out into a
temporary git worktree and put first on PYTHONPATH of its processes (the benchmark code itself
is the working tree's, for both sides). Writes ``benchmarks/results/objective_before_after.json`` (``--out``)
(every call, the medians and the machine) and prints a Markdown table.

    python benchmarks/objective_before_after.py --before c1b5313
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import RESULTS_DIR, git_commit, machine_info  # noqa: E402
from objective_speed import POSTERIOR_WIDTHS  # noqa: E402
from render import table  # noqa: E402

#: (B, implementation) pairs: the default batch both ways training may run it, and a large batch compiled.
CASES = ((200, "eager"), (200, "compiled"), (1024, "compiled"))


def run_side(python_path: str | None, implementation: str, batch: int, width: str) -> dict:
    environment = dict(os.environ)
    if python_path:
        environment["PYTHONPATH"] = python_path
    else:
        environment.pop("PYTHONPATH", None)
    output = subprocess.run(
        [sys.executable, str(HERE / "objective_speed.py"), "--one", implementation, "--batch", str(batch), "--width", width],
        env=environment, capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="objective_before_after.json", help="the result file's name in benchmarks/results")
    args = parser.parse_args()
    repository = HERE.parent
    before_commit = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=repository, capture_output=True,
                                   text=True, check=True).stdout.strip()
    calls = []
    with tempfile.TemporaryDirectory() as folder:
        worktree = Path(folder) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(worktree), before_commit], cwd=repository, check=True)
        try:
            for round_ in range(args.rounds):
                for batch, implementation in CASES:
                    for width in POSTERIOR_WIDTHS:
                        for side, python_path in (("before", str(worktree)), ("after", None)):
                            result = run_side(python_path, implementation, batch, width)
                            calls.append({"round": round_, "side": side, **result})
                            print(f"{side:6} {implementation:8} B={batch:5} {width:6} {result['seconds']:.4f} s", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=repository, check=False)
    summary = []
    for batch, implementation in CASES:
        for width in POSTERIOR_WIDTHS:
            seconds = {side: statistics.median(c["seconds"] for c in calls if c["side"] == side and c["batch"] == batch
                                               and c["implementation"] == implementation and c["width"] == width)
                       for side in ("before", "after")}
            summary.append({"batch": batch, "implementation": implementation, "width": width, **seconds,
                            "after_over_before": round(seconds["after"] / seconds["before"], 3)})
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info("cpu"),
        "before_commit": before_commit,
        "after_commit": git_commit(),
        "widths": {name: f"scales U({low}, {high}), means N(0, 1)" for name, (low, high) in POSTERIOR_WIDTHS.items()},
        "statistic": "each call: the median of 5 forward + backward passes after one untimed one; each side: the median "
                     f"over {args.rounds} rounds",
        "summary": summary,
        "calls": calls,
    }
    path = RESULTS_DIR / args.out
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nbefore {before_commit}, after {record['after_commit']} ({record['date']}); wrote {path}\n")
    print(table(["B", "implementation", "posteriors", "before (s)", "after (s)", "after / before"],
                [[row["batch"], row["implementation"], row["width"], f"{row['before']:.4f}", f"{row['after']:.4f}",
                  f"{row['after_over_before']:.2f}"] for row in summary]))


if __name__ == "__main__":
    main()
