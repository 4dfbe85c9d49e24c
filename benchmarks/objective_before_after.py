"""The objective's forward + backward at an earlier commit and at the working tree, back to back.

Each (side, implementation, B, posterior width) runs ``objective_speed.py --one`` in a fresh
process; the sides alternate call by call and the whole set repeats ``--rounds`` times, so that
a shared machine's drift falls on both sides alike. The earlier commit is checked out into a
temporary git worktree and put first on PYTHONPATH of its processes (the benchmark code itself
is the working tree's, for both sides). Writes ``benchmarks/results/objective_before_after.json`` (``--out``)
(every call, the medians and the machine) and prints a Markdown table.

``--training`` times training epochs instead, as the throughput section does (ProdLDA on 20
Newsgroups, median epoch after a warm-up one): HFVAE 2 x 25 at B = 200 and 1024, and the
closed-form ELBO at B = 200, a control for the machine's drift: it runs the working tree's code
in both slots (it never calls the estimator, and older commits lay the package out differently).

    python benchmarks/objective_before_after.py --before c1b5313
    python benchmarks/objective_before_after.py --before cc33392 --cases 200:native 1024:native --out native.json
    python benchmarks/objective_before_after.py --before 1f519da --training --out training_before_after.json
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

from common import CLOSED_FORM_ELBO, RESULTS_DIR, git_commit, machine_info  # noqa: E402
from objective_speed import POSTERIOR_WIDTHS  # noqa: E402
from render import table  # noqa: E402

#: (B, implementation) pairs: the default batch both ways training may run it, and a large batch compiled.
CASES = ((200, "eager"), (200, "compiled"), (1024, "compiled"))

#: --training: (objective, groups, B) of ProdLDA epochs, timed by ``common.time_epochs``.
TRAINING_CASES = (("hfvae", "2x25", 200), ("hfvae", "2x25", 1024), (CLOSED_FORM_ELBO, "50", 200))


def run_training_side(python_path: str | None, counts_file: Path, objective: str, groups: str, batch: int, mode: str) -> dict:
    environment = side_environment(python_path)
    output = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--one-training", str(counts_file), objective, groups, str(batch), mode],
        env=environment, capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def one_training(counts_file: str, objective: str, groups: str, batch: str, mode: str) -> None:
    """Child process: time ProdLDA epochs on the saved counts and print one JSON line."""
    import scipy.sparse as sp

    from common import MODES, TrainingSetup, time_epochs

    result = time_epochs(TrainingSetup("prodlda", groups, objective, int(batch)), sp.load_npz(counts_file), MODES[mode])
    print(json.dumps({"objective": objective, "groups": groups, "batch": int(batch), "seconds": result["seconds_per_epoch"],
                      "epoch_seconds": result["epoch_seconds"]}))


def training_before_after(args: argparse.Namespace, worktree: Path, calls: list[dict]) -> list[dict]:
    """Alternate the two sides over TRAINING_CASES; return the summary rows."""
    import scipy.sparse as sp

    from common import DEFAULT_DATA, MODES, newsgroups_bow

    counts_file = worktree.parent / "counts.npz"
    sp.save_npz(counts_file, newsgroups_bow(DEFAULT_DATA, MODES[args.mode].speed_documents).train_counts)
    for round_ in range(args.rounds):
        for objective, groups, batch in TRAINING_CASES:
            for side, python_path in (("before", str(worktree)), ("after", None)):
                if objective == CLOSED_FORM_ELBO:
                    python_path = None  # the control: the same code in both slots
                result = run_training_side(python_path, counts_file, objective, groups, batch, args.mode)
                calls.append({"round": round_, "side": side, **result})
                print(f"{side:6} {objective:16} {groups:5} B={batch:5} {result['seconds']:.3f} s / epoch", flush=True)
    summary = []
    for objective, groups, batch in TRAINING_CASES:
        seconds = {side: statistics.median(c["seconds"] for c in calls if c["side"] == side and c["objective"] == objective
                                           and c["batch"] == batch) for side in ("before", "after")}
        summary.append({"objective": objective, "groups": groups, "batch": batch, **seconds,
                        "after_over_before": round(seconds["after"] / seconds["before"], 3)})
    return summary


def case(text: str) -> tuple[int, str]:
    """A --cases item, B:implementation."""
    from objective_speed import TOPICVAE_KERNELS

    batch, _, implementation = text.partition(":")
    if not batch.isdigit() or int(batch) < 2 or implementation not in TOPICVAE_KERNELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not B:implementation with B >= 2 and one of {', '.join(TOPICVAE_KERNELS)}")
    return int(batch), implementation


def side_environment(python_path: str | None) -> dict:
    """The environment of a side's process: the earlier commit's worktree first on PYTHONPATH, or none."""
    environment = dict(os.environ)
    if python_path:
        environment["PYTHONPATH"] = python_path
    else:
        environment.pop("PYTHONPATH", None)
    return environment


def run_side(python_path: str | None, implementation: str, batch: int, width: str) -> dict:
    environment = side_environment(python_path)
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
    parser.add_argument("--training", action="store_true", help="time training epochs (TRAINING_CASES) instead of the objective")
    parser.add_argument("--mode", default="quick", choices=("quick", "full"), help="--training: the corpus size and epochs of this mode")
    parser.add_argument("--cases", nargs="+", type=case, default=list(CASES), metavar="B:IMPLEMENTATION",
                        help="the objective's cases, e.g. 1024:native (default: " + " ".join(f"{b}:{i}" for b, i in CASES) + ")")
    if len(sys.argv) > 1 and sys.argv[1] == "--one-training":
        one_training(*sys.argv[2:7])
        return
    args = parser.parse_args()
    repository = HERE.parent
    before_commit = subprocess.run(["git", "rev-parse", "--short", args.before], cwd=repository, capture_output=True,
                                   text=True, check=True).stdout.strip()
    calls = []
    with tempfile.TemporaryDirectory() as folder:
        worktree = Path(folder) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(worktree), before_commit], cwd=repository, check=True)
        try:
            summary = (training_before_after if args.training else objective_before_after)(args, worktree, calls)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=repository, check=False)
    if args.training:
        write_record(args, before_commit, summary, calls,
                     f"each call: the median epoch after a warm-up one ({args.mode} mode's corpus and epochs); each side: "
                     f"the median over {args.rounds} rounds",
                     ["objective", "groups", "B", "before (s / epoch)", "after (s / epoch)", "after / before"],
                     [[row["objective"], row["groups"], row["batch"], f"{row['before']:.3f}", f"{row['after']:.3f}",
                       f"{row['after_over_before']:.2f}"] for row in summary])
    else:
        write_record(args, before_commit, summary, calls,
                     f"each call: the median of 5 forward + backward passes after one untimed one; each side: the median over "
                     f"{args.rounds} rounds",
                     ["B", "implementation", "posteriors", "before (s)", "after (s)", "after / before"],
                     [[row["batch"], row["implementation"], row["width"], f"{row['before']:.4f}", f"{row['after']:.4f}",
                       f"{row['after_over_before']:.2f}"] for row in summary],
                     widths={name: f"scales U({low}, {high}), means N(0, 1)" for name, (low, high) in POSTERIOR_WIDTHS.items()})


def objective_before_after(args: argparse.Namespace, worktree: Path, calls: list[dict]) -> list[dict]:
    """Alternate the two sides over the cases (--cases) and both posterior widths; return the summary rows."""
    for round_ in range(args.rounds):
        for batch, implementation in args.cases:
            for width in POSTERIOR_WIDTHS:
                for side, python_path in (("before", str(worktree)), ("after", None)):
                    result = run_side(python_path, implementation, batch, width)
                    calls.append({"round": round_, "side": side, **result})
                    print(f"{side:6} {implementation:8} B={batch:5} {width:6} {result['seconds']:.4f} s", flush=True)
    summary = []
    for batch, implementation in args.cases:
        for width in POSTERIOR_WIDTHS:
            seconds = {side: statistics.median(c["seconds"] for c in calls if c["side"] == side and c["batch"] == batch
                                               and c["implementation"] == implementation and c["width"] == width)
                       for side in ("before", "after")}
            summary.append({"batch": batch, "implementation": implementation, "width": width, **seconds,
                            "after_over_before": round(seconds["after"] / seconds["before"], 3)})
    return summary


def write_record(args, before_commit: str, summary: list[dict], calls: list[dict], statistic: str,
                 headers: list[str], cells: list[list], **extra) -> None:
    """Write the result file (every call, the medians, the machine) and print the table."""
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info("cpu"),
        "before_commit": before_commit,
        "after_commit": git_commit(),
        **extra,
        "statistic": statistic,
        "summary": summary,
        "calls": calls,
    }
    path = RESULTS_DIR / args.out
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"\nbefore {before_commit}, after {record['after_commit']} ({record['date']}); wrote {path}\n")
    print(table(headers, cells))


if __name__ == "__main__":
    main()
