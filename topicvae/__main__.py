"""``python -m topicvae``: the command line, also as torchrun starts it (``torchrun ... -m topicvae fit ...``)."""

from topicvae.cli import app

app(prog_name="topicvae")
