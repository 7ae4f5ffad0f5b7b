"""The `python -m jobs.<stage>` entry point shared by every job, as `ray job submit` runs them."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

# Importing the models registers them, so that configs validate train.<model> also where seerec runs from a
# source folder that was never pip-installed (and so has no `seerec.models` entry points).
import recommenders.models  # noqa: F401
from pipeline.config import ConfigError, SeerecConfig, load_config
from pipeline.errors import SeerecError
from pipeline.logs import interrupted, setup_logging


def job_main(run: Callable[..., object], description: str, argv: list[str] | None = None,
             flags: dict[str, str] | None = None) -> int:
    """Parse `--config FILE [--flag ...] [section.key=value ...]`, run the job, and turn user errors into
    one sentence with exit code 2 instead of a traceback (and Ctrl-C into one line with exit code 130)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", "-c", help="YAML config file (defaults apply without one)")
    parser.add_argument("--config-env", metavar="VAR", help="read the YAML config from this environment variable "
                                                            "instead (how `seerec submit` ships it)")
    parser.add_argument("--verbose", "-v", action="store_true")
    for flag, help_text in (flags or {}).items():
        parser.add_argument(f"--{flag}", action="store_true", help=help_text)
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. embed.text.items_per_batch=64")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    try:
        cfg: SeerecConfig = _load(args.config, args.config_env, args.overrides)
        run(cfg, **{flag.replace("-", "_"): getattr(args, flag.replace("-", "_")) for flag in flags or {}})
    except SeerecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        return interrupted(exc)
    return 0


def _load(config: str | None, config_env: str | None, overrides: list[str]) -> SeerecConfig:
    """The config from a file, or from an environment variable holding a file's text."""
    if config_env is None:
        return load_config(config, overrides)
    if config is not None:
        raise ConfigError("give either --config or --config-env, not both")
    if config_env not in os.environ:
        raise ConfigError(f"environment variable {config_env} (named by --config-env) is not set")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{config_env}.yaml"
        path.write_text(os.environ[config_env])
        return load_config(path, overrides)
