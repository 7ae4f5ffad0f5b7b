"""What every front door prints: rich log lines, and one line for a job stopped by Ctrl-C or SIGTERM.

Kept apart from the runtime so that `seerec --version` and `--help` import neither LanceDB nor Ray.
"""

from __future__ import annotations

import logging
import signal
import sys
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


class Terminated(KeyboardInterrupt):
    """SIGTERM (`timeout`, a scheduler stopping the job), ended like Ctrl-C."""


# What an interrupted stage leaves: its flushed rows, which the next run adopts.
RESUME_HINT = "flushed rows are kept; run the same command again to resume"


def interrupted(exc: KeyboardInterrupt) -> int:
    """End a job stopped by Ctrl-C or SIGTERM with one line instead of tracebacks: shut Ray down, say what
    was kept, and return the exit code (130, or 143 for SIGTERM)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C ends the process at once
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        sys.modules["ray"].shutdown()
    print(f"interrupted: {exc.args[0]}" if exc.args else "interrupted", file=sys.stderr, flush=True)
    return 143 if isinstance(exc, Terminated) else 130
