"""Logging set-up, done once by the CLI."""

import logging

__all__ = ["configure_logging"]


def configure_logging(verbosity: int = 0) -> None:
    """Log to stderr under the ``newswatch`` names; leave alone a host app's set-up."""
    root = logging.getLogger()
    if root.handlers:
        return
    level = {0: logging.INFO}.get(verbosity, logging.DEBUG if verbosity > 0 else logging.WARNING)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    # Third-party libraries are chatty at INFO.
    for noisy in ("kafka", "apache_beam", "urllib3", "absl"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
