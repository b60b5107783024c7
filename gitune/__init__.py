"""gitune: hyperparameter sweeps of Generative Invariance Transfer on long-tailed image classification."""

__version__ = "0.1.0"


def version_string() -> str:
    """`gitune <version>`: the installed distribution's version, else the package's own __version__."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"gitune {version('gitune')}"
    except PackageNotFoundError:
        return f"gitune {__version__}"
