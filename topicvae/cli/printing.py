"""What the text commands share: how topics and their associations are printed, and the files
``fit --out DIR`` writes beside the model."""

from __future__ import annotations

from topicvae.cli.app import echo


#: What `fit --out DIR` writes beside the model: the results, the same for the same seed and
#: inputs on CPU (REPORT_FILE), and the facts of this one process's run (RUN_FILE).
REPORT_FILE, RUN_FILE = "report.json", "run.json"


#: Where `fit --out DIR` keeps its training checkpoint: DIR/checkpoint/checkpoint.pt.
CHECKPOINT_DIR = "checkpoint"


# ------------------------------------------------------------------------------------------
# printing
# ------------------------------------------------------------------------------------------
def print_topics(model, n_words: int, information: dict | None = None) -> None:
    """Active topics by group, each with its I(x; z_k); then the pruned ones apart, one line each.

    ``information`` is an :func:`~topicvae.objective.information.information_summary`; without it the
    model's own analysis of its training documents is used, or, for models saved before it
    existed, every topic is printed.
    """
    if information is None and getattr(model, "analysis_", None) is not None:
        from topicvae.objective.information import information_summary

        information = information_summary(model, model.analysis_.information, pruning=model.analysis_.pruning)
    table = model.topics(n_words)
    per_topic = information["per_topic"] if information else {}
    pruned = set(information["pruned_topics"]) if information else set()
    for group in model.groups_:
        kind = "Concrete" if group.is_concrete else "Gaussian"
        shown = f"{group.size} {kind} {'categories' if group.is_concrete else 'topics'}"
        if information is not None and group.is_concrete:
            shown += f", I(x; z) = {per_topic[group.name]:.3f} nats" + (" (pruned)" if group.name in pruned else "")
        rows = [(label, row) for label, row in table[table["group"] == group.name].iterrows() if label not in pruned]
        if information is not None and not group.is_concrete:
            rows.sort(key=lambda item: -per_topic[item[0]])
            shown += f", {len(rows)} active"
        echo(f"\ngroup {group.name} ({shown})")
        for label, row in rows:
            mi = "" if information is None or group.is_concrete else f"  MI {per_topic[label]:.3f}"
            echo(f"  {label:>8}{mi}  {' '.join(row['words'])}")
    gaussian_pruned = [label for label in information["pruned_topics"] if ":" in label] if information else []
    if gaussian_pruned:
        echo(f"\npruned topics ({len(gaussian_pruned)}; the encoder does not use them, so their words mean nothing):")
        errors = information.get("per_topic_standard_error") or {}
        for label in sorted(gaussian_pruned, key=lambda label: -per_topic[label]):
            noise = f" ± {2 * errors[label]:.4f} (two standard errors)" if label in errors else ""
            echo(f"  {label:>8}  MI {per_topic[label]:+.4f}{noise}")


def shown_pairs(model, n_pairs: int, n_words: int):
    """What `fit` and `topics` print and report.json holds: the significant associations across
    groups (largest partial correlation first) and the duplicates, ``n_pairs`` of each; None
    where there are no two Gaussian groups or no analysis."""
    if len(model.groups_.gaussian) < 2 or getattr(model, "analysis_", None) is None:
        return None
    pairs = model.correlated_topics(None, n_words=n_words)
    associations = pairs[(pairs["kind"] == "association") & pairs["significant"]].head(n_pairs)
    duplicates = pairs[pairs["kind"] == "duplicate"].head(n_pairs)
    return associations, duplicates


def print_pairs(model, n_pairs: int, n_words: int) -> None:
    from topicvae.topics.estimator import DUPLICATE_SHARED_WORDS

    shown = shown_pairs(model, n_pairs, n_words)
    if shown is None:
        return
    associations, duplicates = shown
    corr = model.analysis_.correlations
    echo(
        f"\nassociated topics across groups (partial correlation under q(z) between active topics, document length "
        f"removed; significant beyond a permutation null at {corr.level:g}, |partial| > {corr.threshold:.3f}):"
    )
    if associations.empty:
        echo("  none beyond the null" + (" (the null is degenerate: every permuted partial correlation is 0)" if corr.threshold <= 0 else ""))
    for row in associations.itertuples():
        echo(f"  partial={row.partial:+.3f}  {row.topic_a:>8}  {' '.join(row.words_a)}")
        echo(f"  {'':14}  {row.topic_b:>8}  {' '.join(row.words_b)}")
    if not duplicates.empty:
        echo(f"duplicates (one theme in both groups: at least {DUPLICATE_SHARED_WORDS} of the top 10 words shared):")
        for row in duplicates.itertuples():
            echo(f"  {row.topic_a:>8} ~ {row.topic_b:<8}  {' '.join(row.words_a[:6])}")
