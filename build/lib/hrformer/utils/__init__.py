"""Utilities shared by scripts and training code (model complexity counting, ...)."""
