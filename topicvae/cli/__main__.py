from topicvae.cli import app

app()
