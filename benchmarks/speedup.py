"""Before and after: training speed of this checkout against the commit before the speed-ups.

The profile of an HFVAE epoch (``machine_limit``'s operator table) showed the estimator of the
batch marginals (the B x B x variables pairwise term) taking most of the time. Two changes
followed, and this section measures what they bought:

* the fused Gaussian kernels of ``topicvae.objective.kernels`` run through ``torch.compile`` when a
  training run is large enough to win back the compile time (``worth_compiling``);
* with all four weights equal (``vae``, ``beta-vae``) the marginals cannot reach the gradient,
  so they are estimated without their backward pass.

Both trees are timed with the same harness (``common.time_epochs``) on the same bag-of-words,
each configuration in a fresh process, before and after back to back, so that a change in the
machine's load hits both sides of a ratio.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import scipy.sparse as sp

from common import REPO_ROOT, Mode, MissingData, TrainingSetup, newsgroups_bow, say
from speed import THROUGHPUT_OBJECTIVES

#: The last commit before the speed-ups: its estimator ran the fused kernels eagerly and
#: always kept the marginals' backward pass.
BEFORE_COMMIT = "9aaa30a"

#: Run in a fresh process whose ``topicvae`` is imported from the tree on PYTHONPATH.
_CHILD = """
import json, sys
import scipy.sparse as sp
sys.path.insert(0, sys.argv[1])
from common import MODES, TrainingSetup, time_epochs
import topicvae
counts = sp.load_npz(sys.argv[2])
row = time_epochs(TrainingSetup(**json.loads(sys.argv[3])), counts, MODES[sys.argv[4]])
print(json.dumps({**row, "topicvae_imported_from": topicvae.__file__}))
"""


def _commit_exists(commit: str) -> bool:
    check = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"], cwd=REPO_ROOT,
                           capture_output=True, text=True)
    return check.returncode == 0


def _time_in_tree(tree: Path, counts_file: Path, setup: TrainingSetup, mode: Mode) -> dict:
    environment = {**os.environ, "PYTHONPATH": str(tree)}
    child = subprocess.run(
        [sys.executable, "-c", _CHILD, str(Path(__file__).resolve().parent), str(counts_file),
         json.dumps(setup.__dict__), mode.name],
        cwd=tree, env=environment, capture_output=True, text=True,
    )
    if child.returncode != 0:
        raise RuntimeError(f"timing {setup.label()} in {tree} failed:\n{child.stderr[-2000:]}")
    row = json.loads(child.stdout.strip().splitlines()[-1])
    imported = Path(row.pop("topicvae_imported_from")).resolve()
    if tree.resolve() not in imported.parents:
        raise RuntimeError(f"the child imported topicvae from {imported}, not from {tree}: the timing would compare a tree with itself")
    return row


def speedup(mode: Mode, data: Path) -> tuple[dict, dict]:
    """Seconds per epoch of ProdLDA for each objective, at the commit before the speed-ups and now."""
    if not _commit_exists(BEFORE_COMMIT):
        raise MissingData(f"commit {BEFORE_COMMIT} is not in this clone (a shallow clone?); fetch the history to compare")
    bow = newsgroups_bow(data, mode.speed_documents)
    batches = mode.throughput_batches[:1] + tuple(b for b in mode.throughput_batches[1:] if b <= 1024)[-1:]
    rows = []
    with tempfile.TemporaryDirectory() as work:
        before_tree = Path(work) / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(before_tree), BEFORE_COMMIT], cwd=REPO_ROOT,
                       check=True, capture_output=True)
        try:
            counts_file = Path(work) / "counts.npz"
            sp.save_npz(counts_file, bow.train_counts)
            for batch in batches:
                for objective, groups in THROUGHPUT_OBJECTIVES:
                    setup = TrainingSetup("prodlda", groups, objective, batch)
                    say(f"speedup: {setup.label()}, before ({BEFORE_COMMIT}) and after")
                    before = _time_in_tree(before_tree, counts_file, setup, mode)
                    after = _time_in_tree(REPO_ROOT, counts_file, setup, mode)
                    rows.append({
                        "model": setup.model, "batch_size": batch, "objective": objective, "groups": groups,
                        "before_seconds_per_epoch": before["seconds_per_epoch"],
                        "after_seconds_per_epoch": after["seconds_per_epoch"],
                        "before_epoch_seconds": before["epoch_seconds"],
                        "after_epoch_seconds": after["epoch_seconds"],
                        "speedup": round(before["seconds_per_epoch"] / after["seconds_per_epoch"], 2),
                    })
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(before_tree)], cwd=REPO_ROOT, capture_output=True)
    settings = {
        "before_commit": BEFORE_COMMIT,
        "corpus": {"name": "20 Newsgroups bydate train, stripped, TextVectorizer defaults", **bow.describe()},
        "batch_sizes": list(batches),
        "warmup_epochs": mode.warmup_epochs,
        "timed_epochs": mode.timed_epochs,
        "statistic": "median of the timed epochs; the warm-up epoch holds the compiling",
        "harness": "this checkout's benchmarks/common.py time_epochs for both trees, one fresh process per measurement",
    }
    return settings, {"rows": rows, "ratios": _ratios(rows)}


def _ratios(rows: list[dict]) -> list[dict]:
    """HFVAE over the closed-form ELBO, before and after, per batch size."""
    by_key = {(r["batch_size"], r["objective"]): r for r in rows}
    ratios = []
    for batch in dict.fromkeys(r["batch_size"] for r in rows):
        hfvae, plain = by_key[(batch, "hfvae")], by_key[(batch, "elbo-closed-form")]
        ratios.append({
            "batch_size": batch,
            "before": round(hfvae["before_seconds_per_epoch"] / plain["before_seconds_per_epoch"], 2),
            "after": round(hfvae["after_seconds_per_epoch"] / plain["after_seconds_per_epoch"], 2),
        })
    return ratios
