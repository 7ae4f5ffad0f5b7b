"""Log lines for every front door: rich on a terminal, plain where stdout carries data.

Kept apart from the runtime so that `seerec --version` and `--help` import neither LanceDB nor Ray.
"""

from __future__ import annotations

import logging
import warnings

from rich.console import Console
from rich.logging import RichHandler


def setup_logging(verbose: bool = False, to_stderr: bool = False) -> None:
    """Rich log lines on stdout, or on stderr (`to_stderr`) where stdout carries data such as JSON."""
    level = logging.DEBUG if verbose else logging.INFO
    handler = RichHandler(show_path=False, rich_tracebacks=False, console=Console(stderr=True) if to_stderr else None)
    logging.basicConfig(level=level, format="%(message)s", datefmt="[%X]", handlers=[handler], force=True)
    # Ray starts its raylet with fork+exec after LanceDB is loaded; exec makes that safe, so the
    # fork warnings that LanceDB and Lance print for it are noise.
    warnings.filterwarnings("ignore", message=".*fork.*", category=RuntimeWarning)
    warnings.filterwarnings("ignore", message="lance is not fork-safe")
    for noisy in ("httpx", "urllib3", "filelock", "sentence_transformers", "ray.data"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
