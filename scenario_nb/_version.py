"""The package version, in one place: pyproject.toml, `scenario_nb.__version__` and the User-Agent read it."""

__version__ = "0.2.0"
USER_AGENT = f"scenario_nb/{__version__}"
