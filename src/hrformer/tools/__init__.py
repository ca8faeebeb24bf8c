"""Command-line tools installed as console scripts (pyproject.toml ``[project.scripts]``)."""
