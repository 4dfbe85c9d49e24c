"""The text domain: ProdLDA and NVDM with grouped topics, the TopicModel estimator, and the
analysis of its topics (information, associations, coherence, evaluation, exports)."""
