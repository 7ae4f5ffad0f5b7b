"""`seerec explore`: a read-only web app to look at the item store and at what recommenders make of it.

`app` builds the Starlette app (pages, media with Range requests, thumbnails, the token gate), `media` serves
media files confined to the media roots, `thumbs` caches keyframe thumbnails beside the store, and `runs` reads
run folders for the runs page (tables, metrics, plots); the user pages serve a run with `recommenders.serve`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from jobs.explore.app import ExploreError, build_app, is_loopback
from pipeline.config import SeerecConfig

log = logging.getLogger("seerec.explore")

__all__ = ["ExploreError", "build_app", "serve"]


def serve(cfg: SeerecConfig, run_dirs: list[Path], host: str = "127.0.0.1", port: int = 8000,
          token: str | None = None, cache_dir: Path | None = None) -> None:
    """Serve the explorer with uvicorn until interrupted; any address but loopback needs a token."""
    import uvicorn

    if not is_loopback(host) and not token:
        raise ExploreError(f"--host {host} would expose the store beyond this machine; give a token with --token "
                           "or SEEREC_EXPLORE_TOKEN (every request must then carry it)")
    app = build_app(cfg, run_dirs, token, cache_dir)
    shown = f"http://{host}:{port}/" + (f"?token={'*' * 8}" if token else "")
    log.info("explorer on %s (read-only; store %s)", shown, cfg.store.uri)
    uvicorn.run(app, host=host, port=port, log_level="warning")
