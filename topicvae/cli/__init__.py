"""The ``topicvae`` command line: thin commands that parse, call the library and print.

:mod:`topicvae.cli.app` holds the Typer app and what every command shares (printing that
survives a closed pipe, one-line errors, the corpus options); each domain's commands live in
their own module and register themselves on import.
"""

from topicvae.cli.app import app
# importing a command module registers its commands on app, in this order
from topicvae.cli import fit  # noqa: E402  (isort: skip)
from topicvae.cli import topics  # noqa: E402  (isort: skip)
from topicvae.cli import images  # noqa: E402  (isort: skip)
from topicvae.cli import data  # noqa: E402  (isort: skip)

#: The modules whose commands ``app`` runs, in the order ``topicvae --help`` lists them.
COMMAND_MODULES = (fit, topics, images, data)

__all__ = ["app", "COMMAND_MODULES"]
