"""Leaf utilities every part of the package may use (they import nothing else of topicvae)."""
