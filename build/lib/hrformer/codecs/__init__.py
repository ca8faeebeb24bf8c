"""Codecs: one small unit per target encoding, shared by training, evaluation and demos."""
