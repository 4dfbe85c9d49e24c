"""The ``topicvae`` command line: parse, call the library, print."""

from __future__ import annotations

import math
import os
import sys
import tempfile
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="topicvae",
    help="Neural topic models (ProdLDA, NVDM) with grouped latent topics, trained with the HFVAE objective.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Fetch or convert public corpora into one-document-per-line files.", no_args_is_help=True)
app.add_typer(data_app, name="data")

state = {"debug": False}


def echo(message: str = "", *, err: bool = False) -> None:
    """Print a line; once a reader closes the stream (``| head``, a pager quit early), stay quiet.

    A closed pipe is not an error of the command: what it computed and wrote stays written.
    The rest of its output goes to the null device and the command finishes its work (files
    it has still to write included) with the exit status it would have had. Any other failure
    to write (a full disk) is an error, said on stderr.
    """
    stream = "stderr" if err else "stdout"
    if state.get(f"{stream}_closed"):
        return
    try:
        typer.echo(message, err=err)
    except BrokenPipeError:
        silence(stream)
    except OSError as error:
        if err:
            raise
        silence("stdout")
        fail(OSError(f"could not write the output ({error.strerror or error}); files the command writes are complete"))


def silence(stream: str) -> None:
    """Send the rest of ``stream`` ("stdout" or "stderr") to the null device: its reader has gone."""
    state[f"{stream}_closed"] = True
    # Python flushes the stream again at exit: point its descriptor at the null device so that
    # the unwritten rest of the buffer goes nowhere instead of failing again
    try:
        descriptor = getattr(sys, stream).fileno()
    except (AttributeError, OSError, ValueError):  # not a file (captured output): nothing to flush at exit
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


#: Short names for the progress bar.
BAR_TERMS = {"loss": "loss", "reconstruction": "LL", "mutual_information": "MI", "tc_between": "TCb", "tc_within": "TCw", "dimwise_kl": "KL"}


class Objective(str, Enum):
    hfvae = "hfvae"
    vae = "vae"
    beta_vae = "beta-vae"
    beta_tcvae = "beta-tcvae"


class DecodeErrors(str, Enum):
    strict = "strict"
    replace = "replace"


DECODE_ERRORS_HELP = (
    "Bytes the encoding cannot decode: stop with an error (strict), or replace each with U+FFFD "
    "and report how many (replace)."
)


def read_documents(path: Path, *, text_column: str, encoding: str, decode_errors: DecodeErrors) -> list[str]:
    """``read_corpus``, with a note on stderr of how many undecodable bytes were replaced."""
    from topicvae.text.corpus import read_corpus

    documents = read_corpus(path, text_column=text_column, encoding=encoding, errors=decode_errors.value)
    note_replaced_bytes(documents.undecodable_bytes, path)
    return documents


def note_replaced_bytes(count: int, path: Path) -> None:
    if count:
        echo(f"note: replaced {count} undecodable byte(s) of {path} with U+FFFD (--decode-errors replace)", err=True)


def fail(error: BaseException, note: str | None = None) -> None:
    """One line on stderr (``note`` appended after a semicolon) and exit code 1; the traceback only with --debug.

    In data-parallel runs the other ranks' lines start with their rank: an error may be theirs alone
    (a file one host cannot read), and torchrun does not show their output otherwise.
    """
    if isinstance(error, typer.Exit):  # a RuntimeError to click: an exit already decided (and said), not an error
        raise error
    if state["debug"]:
        raise error
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    echo(f"{state.get('speaker', '')}error: {message}" + (f"; {note}" if note else ""), err=True)
    raise typer.Exit(code=1)


#: Exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED_EXIT_CODE = 130


def interrupted(error: KeyboardInterrupt, note: str) -> None:
    """Ctrl-C: one line on stderr and exit code 130 instead of a traceback."""
    if state["debug"]:
        raise error
    echo(f"\ninterrupted: {note}", err=True)
    raise typer.Exit(code=INTERRUPTED_EXIT_CODE)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """topicvae's own warnings as one line on stderr, like its errors; others as Python shows them."""
    from topicvae.topics.estimator import DegenerateCorpusWarning, EmptyDocumentWarning

    if issubclass(category, (DegenerateCorpusWarning, EmptyDocumentWarning)):
        echo(f"{state.get('speaker', '')}warning: {message}", err=True)
    else:
        state["showwarning"](message, category, filename, lineno, file, line)


#: The corpus-reading options every command that reads documents takes, declared once.
TextColumn = Annotated[str, typer.Option(help="Column (.csv) or field (.jsonl) holding the text.")]
Encoding = Annotated[str, typer.Option(help="The corpus's text encoding, e.g. utf-8 or latin-1.")]
DecodeErrorsOption = Annotated[DecodeErrors, typer.Option(help=DECODE_ERRORS_HELP)]

# OSError covers missing, unreadable and existing paths and failed downloads
USER_ERRORS = (ValueError, OSError, FloatingPointError, RuntimeError, UnicodeError)


@app.callback()
def main(
    context: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show the full traceback of an error.")] = False,
) -> None:
    state["debug"] = debug
    state["speaker"] = ""
    state["stdout_closed"] = state["stderr_closed"] = False
    # topicvae's warnings as one line each while the command runs; Python's display again after
    state["showwarning"] = warnings.showwarning
    warnings.showwarning = show_warning
    context.call_on_close(lambda: setattr(warnings, "showwarning", state["showwarning"]))
    if context.invoked_subcommand != "fit" and os.environ.get("WORLD_SIZE", "1") not in ("", "0", "1"):
        # every process would run the whole command and write the same files
        fail(ValueError(
            f"'topicvae {context.invoked_subcommand}' runs in one process: only 'fit' trains data-parallel under "
            "torchrun; run it without torchrun"
        ))


def print_information(information: dict, documents: str, variables: str = "topics") -> None:
    """I(x; z), the TCs and the topics kept and pruned, with the rule that decided."""
    echo(
        f"\nI(x; z) = {information['mutual_information']:.3f} nats over {information['dataset_size']} {documents} "
        f"(at most log N = {math.log(information['dataset_size']):.2f}); TC between groups = {information['tc_between']:.3f}; "
        f"TC within groups: {', '.join(f'{k} {v:.3f}' for k, v in information['tc_within'].items())}"
    )
    active, pruned = information["active_topics"], information["pruned_topics"]
    if information.get("threshold") is not None:
        decided = f"I(x; z_k) >= {information['threshold']:g} nats"
    elif information.get("gap") is not None:
        decided = f"above the gap in the sorted I(x; z_k) (a factor {information['gap']:.0f} between the smallest kept and the next)"
    else:
        decided = (
            f"no gap in the sorted I(x; z_k) (largest step a factor {information['largest_ratio']:.1f}, under 10), so only "
            "estimates within two standard errors of 0 count as pruned"
        )
    echo(f"{len(active)} of {len(active) + len(pruned)} {variables} active: {decided}")
    if "note" in information:
        echo(f"({information['note']})")


def run_with_progress(steps, *, enabled: bool) -> int:
    """Drive a fit_iter generator with a progress bar; returns the number of epochs it completed.

    The bar writes to stderr: if its reader goes away (``2>&1 | head``), the bar stops and
    training goes on.
    """
    from tqdm import tqdm

    bar, epochs_done, reader_gone = None, 0, False

    def drawn(action) -> None:
        nonlocal reader_gone
        if reader_gone:
            return
        try:
            action()
        except BrokenPipeError:
            reader_gone = True
            silence("stderr")

    try:
        for progress in steps:
            if bar is None:
                def start(progress=progress) -> None:
                    nonlocal bar
                    bar = tqdm(
                        total=progress.epochs * progress.steps_per_epoch,
                        initial=(progress.epoch - 1) * progress.steps_per_epoch,  # a resumed run starts part way
                        disable=not enabled,
                        file=sys.stderr,
                        unit="step",
                        dynamic_ncols=True,
                    )

                drawn(start)
            drawn(lambda: bar.update(1))
            epochs_done += progress.epoch_done
            if progress.step == progress.steps_per_epoch or progress.step % 10 == 0:
                terms = progress.epoch_terms or progress.terms
                drawn(lambda: bar.set_description(f"epoch {progress.epoch}/{progress.epochs}", refresh=False))
                drawn(lambda: bar.set_postfix({short: f"{terms[name]:.3g}" for name, short in BAR_TERMS.items()}, refresh=False))
    finally:
        # Closing the generator now (not whenever it is collected) lets fit_iter write the last
        # completed epoch's checkpoint when Ctrl-C arrives while this loop, not training, runs.
        steps.close()
        if bar is not None:
            drawn(bar.close)
    return epochs_done


def check_creatable(path: Path, option: str) -> None:
    """That the folder ``path`` exists or can be made, said before any work (nothing is left behind:
    the probe folder is removed at once)."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{option} {path} exists and is not a directory: choose another path")
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotADirectoryError(f"{option} {path}: {ancestor} is a file, not a folder: choose another path")
    if path.exists():
        return
    try:
        Path(tempfile.mkdtemp(prefix=".topicvae-probe-", dir=ancestor)).rmdir()
    except OSError as error:
        raise type(error)(f"{option} {path} cannot be created in {ancestor} ({error.strerror}): choose a writable folder") from None

