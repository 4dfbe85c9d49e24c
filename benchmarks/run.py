"""The benchmark suite: speed, memory, cost growth and topic quality, side by side with peers.

    python benchmarks/run.py                       # the issues' settings (about 60 minutes on 2 cores)
    python benchmarks/run.py --quick               # a few minutes, smaller and fewer: indicative only
    python benchmarks/run.py --smoke               # seconds per section: checks the code paths
    python benchmarks/run.py --only throughput quality --data ../shared/data
    python benchmarks/run.py --tables-only         # re-render docs/benchmarks.md from the results

Each section writes ``benchmarks/results/<section>-<mode>.json`` (date, machine, commit, settings
and measurements); afterwards the tables of docs/benchmarks.md are regenerated from every result
file present. A section whose data is missing says so and is skipped. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling modules, however this is started

from common import DEFAULT_DATA, DOC_PATH, MODES, RESULTS_DIR, SECTIONS, MissingData, say, write_result  # noqa: E402
from render import render_all, update_document  # noqa: E402


def section_functions() -> dict:
    """Section name -> function(mode, data) -> (settings, payload); imported late (torch is slow to load)."""
    import objective_speed
    import quality
    import resources
    import scale
    import speed
    import speedup

    return {
        "throughput": speed.throughput,
        "speedup": speedup.speedup,
        "growth": speed.growth,
        "memory": resources.memory,
        "vectorizer": resources.vectorizer,
        "machine_limit": speed.machine_limit,
        "objective": objective_speed.objective,
        "quality": quality.quality,
        "prodlda_paper": quality.prodlda_paper,
        "streaming": scale.streaming,
        "data_parallel": scale.data_parallel,
    }


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a few minutes: fewer epochs, batch sizes and documents")
    size.add_argument("--smoke", action="store_true", help="tiny sizes and one epoch: exercises every code path")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                        help=f"run only these sections ({', '.join(SECTIONS)})")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="the shared data folder holding 20newsgroups/ and 20news_prodlda/ (default ../shared/data)")
    parser.add_argument("--device", default="cpu",
                        help="where the speed sections (throughput, growth, objective, ...) run: cpu or cuda")
    parser.add_argument("--tables-only", action="store_true", help="re-render docs/benchmarks.md without measuring")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if not args.tables_only:
        mode = dataclasses.replace(MODES["smoke" if args.smoke else "quick" if args.quick else "full"], device=args.device)
        functions = section_functions()
        started_all = time.perf_counter()
        for section in args.only or SECTIONS:
            say(f"== {section} ({mode.name}) ==")
            started = time.perf_counter()
            try:
                settings, payload = functions[section](mode, args.data.resolve())
            except MissingData as missing:
                say(f"skipped {section}: {missing}")
                continue
            seconds = time.perf_counter() - started
            path = write_result(section, mode, settings, payload, seconds)
            say(f"{section}: {seconds:.1f} s, wrote {path.relative_to(RESULTS_DIR.parent.parent)}")
        say(f"all sections: {time.perf_counter() - started_all:.1f} s")
    tables = render_all(RESULTS_DIR)
    update_document(DOC_PATH, tables)
    print(tables)
    say(f"updated {DOC_PATH.relative_to(DOC_PATH.parent.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
