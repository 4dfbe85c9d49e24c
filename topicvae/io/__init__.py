"""Files: model directories (JSON config, vocabulary, tensors loaded with weights_only=True) and
atomic writes."""
