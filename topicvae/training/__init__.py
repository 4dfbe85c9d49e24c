"""Training shared by both domains: the loop and its progress, data-parallel training, and the
random streams that make a run reproducible and resumable."""
