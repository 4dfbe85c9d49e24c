"""``topicvae data``: fetch or convert public corpora into one-document-per-line files."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from topicvae.cli.app import USER_ERRORS, data_app, echo, fail


class Subset(str, Enum):
    train = "train"
    test = "test"
    all = "all"


@data_app.command("20newsgroups")
def data_20newsgroups(
    out: Annotated[Path, typer.Option(help="Output file, one post per line (.txt or .txt.gz).")],
    subset: Annotated[Subset, typer.Option(help="The bydate split.")] = Subset.train,
    source: Annotated[Optional[Path], typer.Option(help="A local copy (jsonl.gz files or the bydate folders); without it scikit-learn downloads and caches the data.")] = None,
    labels: Annotated[Optional[Path], typer.Option(help="Also write each written post's newsgroup, one per line.")] = None,
    keep_headers: Annotated[bool, typer.Option(help="Keep headers, quotes and signatures (they leak the newsgroup).")] = False,
) -> None:
    """Write the 20 Newsgroups posts one per line (inner newlines folded)."""
    try:
        from topicvae.text.newsgroups import load_20newsgroups
        from topicvae.text.corpus import write_corpus_lines

        remove = () if keep_headers else ("headers", "footers", "quotes")
        dataset = load_20newsgroups(subset.value, source=source, remove=remove)
        kept = [i for i, text in enumerate(dataset.texts) if text.split()]
        write_corpus_lines([dataset.texts[i] for i in kept], out)
        if labels is not None:
            write_corpus_lines([dataset.label_names[dataset.labels[i]] for i in kept], labels)
    except USER_ERRORS as error:
        fail(error)
        return
    skipped = len(dataset.texts) - len(kept)
    echo(f"wrote {len(kept)} posts of the {subset.value} split to {out} ({skipped} left empty by stripping were skipped)")
