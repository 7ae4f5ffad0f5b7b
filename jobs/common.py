"""The `python -m jobs.<stage>` entry point shared by every job, as `ray job submit` runs them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from pipeline.config import SeerecConfig, load_config
from pipeline.errors import USER_ERRORS
from pipeline.runtime import setup_logging


def job_main(run: Callable[..., object], description: str, argv: list[str] | None = None,
             flags: dict[str, str] | None = None) -> int:
    """Parse `--config FILE [--flag ...] [section.key=value ...]`, run the job, and turn user errors into
    one sentence with exit code 2 instead of a traceback."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", "-c", help="YAML config file (defaults apply without one)")
    parser.add_argument("--verbose", "-v", action="store_true")
    for flag, help_text in (flags or {}).items():
        parser.add_argument(f"--{flag}", action="store_true", help=help_text)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. embed.text.batch_size=64")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        cfg: SeerecConfig = load_config(args.config, args.overrides)
        run(cfg, **{flag.replace("-", "_"): getattr(args, flag.replace("-", "_")) for flag in flags or {}})
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
