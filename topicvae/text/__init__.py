"""Text to bag-of-words: corpus readers and writers, Usenet cleaning and 20 Newsgroups, the
vectorizer, and sharded bags of words for corpora that do not fit in memory. No torch here."""
