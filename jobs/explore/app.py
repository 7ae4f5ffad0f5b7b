"""The explorer's web app: server-rendered pages over the item store, read-only.

Everything is read through `ItemStore` (scans, counts, searches, versions) and, for the user pages,
`recommenders.serve.Server` (a run's model, as `seerec recommend` serves it); nothing here writes to the store.
Every page is a Jinja template with autoescaping on, and every response carries a Content-Security-Policy that
allows only the app's own scripts, so a title or a description holding HTML is shown as text and never runs.
With a token, every request must carry it (see `TokenGate`).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import pyarrow as pa
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from extractors.search import text_query_encoder
from jobs.explore.media import MediaRefused, RangeNotSatisfiable, byte_ranges, open_media
from jobs.explore.runs import RunError, RunView, read_run_folder, run_folders
from jobs.explore.thumbs import Thumbnails
from pipeline.config import SeerecConfig
from pipeline.errors import SeerecError
from pipeline.filters import quote_text, to_sql
from pipeline.media import MediaError
from pipeline.media_roots import MediaRoots
from pipeline.schema import KEY, MEDIA_TYPES, SKIPPED, is_vector_field
from pipeline.store import ItemStore
from recommenders.serve import Server

log = logging.getLogger("seerec.explore")

HERE = Path(__file__).parent
PAGE_SIZE = 24
SEARCH_K = 48
NEIGHBOURS = 8
SHARED_SHOWN = 8  # items shown per semantic-ID prefix level
TOP_K = 20
COUNT_CACHE = 1000  # filters whose counts are kept per table version
TOKEN_COOKIE = "seerec_explore_token"
# Only the app's own files: no inline script, no other origin (the templates link nothing else).
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
LOOPBACK_NAMES = ("localhost",)


class ExploreError(SeerecError):
    """The explorer cannot start as asked (no media roots, an exposed address without a token); one sentence."""


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def media_roots(cfg: SeerecConfig) -> MediaRoots:
    """media.roots, or (as ingest does) the catalog's own folder; without either nothing could be served safely."""
    if not cfg.media.roots and not cfg.ingest.path:
        raise ExploreError("the explorer serves media only from configured folders: set media.roots (or "
                           "ingest.path, whose folder is the default root)")
    return MediaRoots.for_catalog(cfg.media.roots, cfg.ingest.path or "")


@dataclass
class Explorer:
    """What the pages share: the store, the config, the media roots, thumbnails and the runs."""

    cfg: SeerecConfig
    store: ItemStore
    roots: MediaRoots
    thumbs: Thumbnails
    runs: dict[str, Path] = field(default_factory=dict)  # name -> --run folder
    search_problem: str | None = None  # why text search is off, or None
    _servers: dict[str, Server] = field(default_factory=dict)
    _encoder: tuple | None = None  # (table version it was checked at, text -> vector)
    _counts: dict = field(default_factory=dict)  # this table version's counts; filters' counts by their SQL
    _sid_cache: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @property
    def text_column(self) -> str:
        return self.cfg.embed.text.column

    def load_encoder(self) -> None:
        """Load the text encoder once, at start, and embed one query with it, or note why search is off."""
        try:
            self._encoder = (self.store.table.version, text_query_encoder(self.store, self.cfg, self.text_column))
            self._encoder[1]("warm up")
            log.info("text search over %s is ready", self.text_column)
        except SeerecError as exc:
            self.search_problem = str(exc)
            log.warning("text search is off: %s", exc)

    def query_vector(self, text: str) -> np.ndarray:
        """The text's query vector; the column's model is checked again only after the store changed."""
        if self.search_problem:
            raise SeerecError(f"text search is off: {self.search_problem}")
        version = self.store.table.version
        if self._encoder[0] != version:
            self._encoder = (version, text_query_encoder(self.store, self.cfg, self.text_column))
        return self._encoder[1](text)

    def counts(self, where: str | None) -> dict:
        """All items, those per media type and those matching `where`, counted once per table version."""
        version = self.store.table.version
        if self._counts.get("version") != version or len(self._counts) > COUNT_CACHE:
            types = {t: self.store.count(f"media_type = {quote_text(t)}") for t in MEDIA_TYPES}
            self._counts = {"version": version, "total": self.store.count(), "types": types}
        if where not in self._counts:
            self._counts[where] = self.store.count(where)
        return {"total": self._counts["total"], "types": self._counts["types"], "matching": self._counts[where]}

    def server(self, run: str) -> Server:
        """A run's model with its users and histories, loaded on first use and kept."""
        if run not in self.model_runs():
            raise RunError(f"there is no run {run!r} with a trained model; pass its folder with --run")
        if run not in self._servers:
            server = self._servers[run] = Server.from_run(self.model_runs()[run])
            log.info("loaded run %s (%s): %d users, %d items", run, server.model.name, len(server.user_ids),
                     len(server.item_ids))
        return self._servers[run]

    def model_runs(self) -> dict[str, Path]:
        """Every run folder holding a model, named `<--run name>/<path inside it>`: a --run folder that is one
        run, and the runs of comparison and ablation folders (e.g. `ablation/leave-one-out/ids/popularity`)."""
        return {name if inner == "." else f"{name}/{inner}": folder
                for name, path in self.runs.items() for inner, folder in run_folders(path, "model.json").items()}

    def semantic_ids(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """(item ids, codes padded with -1) of a semantic-ID column, read once per table version."""
        key = (column, self.store.table.version)
        if key not in self._sid_cache:
            rows = self.store.scan([KEY, column], f"`{column}` IS NOT NULL")
            codes = rows[column].to_pylist()
            width = max((len(c) for c in codes), default=0)
            matrix = np.full((len(codes), width), -1, dtype=np.int32)
            for i, c in enumerate(codes):
                matrix[i, :len(c)] = c
            self._sid_cache = {key: (np.array(rows[KEY].to_pylist(), dtype=object), matrix)}
        return self._sid_cache[key]

    def cards(self, item_ids: list[str], extra: dict[str, dict] | None = None) -> list[dict]:
        """Item id, title and media type of each id (in that order), plus per-item extras such as a score."""
        if not item_ids:
            return []
        rows = {r[KEY]: r for r in self.store.get(item_ids, [KEY, "title", "media_type"]).to_pylist()}
        missing = {"title": None, "media_type": None, "missing": True}
        return [{**rows.get(i, {KEY: i, **missing}), **(extra or {}).get(i, {})} for i in item_ids]


# ---- pages ---------------------------------------------------------------------------------------------------
def catalog(request: Request) -> Response:
    ex: Explorer = request.app.state.explorer
    query = request.query_params.get("q", "").strip()
    wheres = [w for w in request.query_params.getlist("where") if w.strip()]
    page = _int(request.query_params.get("page"), 0)
    schema = ex.store.schema
    counts = ex.counts(None)
    context = {"query": query, "wheres": wheres, "page": page, "search_problem": ex.search_problem,
               "types": counts["types"], "total": counts["total"], "items": [], "problem": None, "matching": None,
               "pages": 0}
    try:
        where = to_sql(wheres, schema)
        if query:
            vector = ex.query_vector(query)
            hits = ex.store.search_vector(ex.text_column, vector, SEARCH_K, wheres,
                                          columns=[KEY, "title", "media_type"])
            context["items"] = hits.to_pylist()
            context["matching"] = hits.num_rows
        else:
            context["matching"] = ex.counts(where)["matching"]
            context["pages"] = max(1, math.ceil(context["matching"] / PAGE_SIZE))
            rows = ex.store.scan([KEY, "title", "media_type"], where, offset=page * PAGE_SIZE, limit=PAGE_SIZE)
            context["items"] = rows.to_pylist()
    except SeerecError as exc:
        context["problem"] = str(exc)
    return render(request, "catalog.html", context, 400 if context["problem"] else 200)


def item(request: Request) -> Response:
    ex: Explorer = request.app.state.explorer
    item_id = request.path_params["item_id"]
    schema = ex.store.schema
    scalar = [f.name for f in schema if not is_vector_field(f) and not pa.types.is_list(f.type)]
    rows = ex.store.get([item_id], scalar + [f.name for f in schema if pa.types.is_list(f.type)])
    if rows.num_rows == 0:
        raise HTTPException(404, f"there is no item {item_id!r} in the store")
    row = rows.to_pylist()[0]
    names = set(schema.names)
    texts = []  # descriptions and transcripts, with their provenance
    for column in schema.names:
        if f"{column}_prompt_id" in names or f"{column}_language" in names:
            texts.append({"column": column, "text": row.get(column), "model": row.get(f"{column}_model"),
                          "prompt_id": row.get(f"{column}_prompt_id"), "at": row.get(f"{column}_at"),
                          "language": row.get(f"{column}_language"), "error": row.get(f"{column}_error"),
                          "skipped": row.get(f"{column}_{SKIPPED}"), "kind": "transcript"
                          if f"{column}_language" in names else "description"})
    problems = [{"column": name.removesuffix("_error"), "message": row[name]}
                for name in schema.names if name.endswith("_error") and row.get(name)]
    skipped = [{"column": name.removesuffix(f"_{SKIPPED}"), "reason": row[name]}
               for name in schema.names if name.endswith(f"_{SKIPPED}") and row.get(name)]
    context = {"item": row, "texts": texts, "problems": problems, "skipped": skipped,
               "metadata": _metadata(row.get("metadata")),
               "semantic_ids": _shared_prefixes(ex, row, schema), "neighbours": _neighbours(ex, item_id, schema),
               "media_refusal": None}
    try:
        open_media(row.get("media_uri"), row.get("media_type") or "item", ex.roots, ex.cfg.media.max_file_mb)
    except MediaRefused as exc:
        context["media_refusal"] = str(exc)
    return render(request, "item.html", context)


def _metadata(text: str | None) -> dict:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {"metadata": text}
    return value if isinstance(value, dict) else {"metadata": text}


def _shared_prefixes(ex: Explorer, row: dict, schema: pa.Schema) -> list[dict]:
    """Per semantic-ID column: the codes, and per level how many items share the prefix up to it (and some)."""
    found = []
    for f in schema:
        if not (pa.types.is_list(f.type) and pa.types.is_integer(f.type.value_type)) or row.get(f.name) is None:
            continue
        codes = row[f.name]
        ids, matrix = ex.semantic_ids(f.name)
        levels = []
        same = np.ones(len(ids), dtype=bool)
        for level, code in enumerate(codes):
            same &= matrix[:, level] == code
            others = [str(i) for i in ids[same] if i != row[KEY]]
            levels.append({"prefix": codes[:level + 1], "count": len(others), "shown": others[:SHARED_SHOWN]})
        found.append({"column": f.name, "codes": codes, "levels": levels})
    cards = {c[KEY]: c for c in ex.cards(sorted({i for f in found for level in f["levels"] for i in level["shown"]}))}
    for level in (level for f in found for level in f["levels"]):
        level["shown"] = [cards[i] for i in level["shown"]]
    return found


def _neighbours(ex: Explorer, item_id: str, schema: pa.Schema) -> list[dict]:
    found = []
    for f in schema:
        if not is_vector_field(f):
            continue
        try:
            hits = ex.store.neighbours(item_id, f.name, NEIGHBOURS, columns=[KEY, "title", "media_type"])
            found.append({"column": f.name, "hits": hits.to_pylist(), "problem": None})
        except SeerecError as exc:
            found.append({"column": f.name, "hits": [], "problem": str(exc)})
    return found


def users(request: Request) -> Response:
    ex: Explorer = request.app.state.explorer
    run = request.query_params.get("run") or next(iter(ex.model_runs()), None)
    page = _int(request.query_params.get("page"), 0)
    context = {"runs": list(ex.model_runs()), "run": run, "users": [], "page": page, "pages": 0, "problem": None}
    if run:
        try:
            server = ex.server(run)
            context["pages"] = max(1, math.ceil(len(server.user_ids) / PAGE_SIZE))
            context["users"] = [str(u) for u in server.user_ids[page * PAGE_SIZE:(page + 1) * PAGE_SIZE]]
            context["model"] = server.model.name
        except SeerecError as exc:
            context["problem"] = str(exc)
    return render(request, "users.html", context, 400 if context["problem"] else 200)


def user(request: Request) -> Response:
    """A known user of a run: their history and the run's top k for them (the history excluded)."""
    ex: Explorer = request.app.state.explorer
    run, user_id = request.query_params.get("run", ""), request.query_params.get("id", "")
    server = ex.server(run)
    history = server.history(user_id)
    return _recommendations(request, server, run, history, server.for_user(user_id, TOP_K), user_id)


def new_user(request: Request) -> Response:
    """A typed history of item ids, ranked as a new user's (ids the run does not know are named and left out)."""
    ex: Explorer = request.app.state.explorer
    run = request.query_params.get("run", "")
    history = request.query_params.get("items", "").replace(",", " ").split()
    if not history:
        raise RunError("type at least one item id, separated by spaces or commas")
    server = ex.server(run)
    return _recommendations(request, server, run, history, server.for_history(history, TOP_K), None)


def _recommendations(request: Request, server: Server, run: str, history: list[str], ranked: pa.Table,
                     user_id: str | None) -> Response:
    ex: Explorer = request.app.state.explorer
    rows = ranked.to_pylist()
    found = [r for r in rows if r["note"] is None]
    unknown = set(server.unknown(history))
    context = {"run": run, "model": server.model.name, "user_id": user_id,
               "history": ex.cards(history, {i: {"trained": server.in_training(i), "unknown": i in unknown}
                                             for i in history}),
               "recommended": ex.cards([r[KEY] for r in found], {r[KEY]: {"score": r["score"],
                                                                         "trained": server.in_training(r[KEY])}
                                                                 for r in found}),
               "notes": [r["note"] for r in rows if r["note"]], "unknown": sorted(unknown),
               "no_training_items": server.data.trained_items is None}
    return render(request, "user.html", context)


def run_tables(request: Request) -> Response:
    ex: Explorer = request.app.state.explorer
    views = [_view(ex, name) for name in ex.runs]
    return render(request, "runs.html", {"views": views})


def _view(ex: Explorer, name: str) -> RunView:
    view = read_run_folder(ex.runs[name])
    view.name = name
    return view


def plot(request: Request) -> Response:
    """A PNG of a --run folder, by its name in the folder's listing (never a path the URL makes up)."""
    ex: Explorer = request.app.state.explorer
    run, name = request.query_params.get("run", ""), request.query_params.get("file", "")
    if run not in ex.runs or name not in (view := _view(ex, run)).plots:
        raise HTTPException(404, f"run {run!r} has no plot {name!r}")
    return Response((view.path / name).read_bytes(), media_type="image/png")


def stages(request: Request) -> Response:
    ex: Explorer = request.app.state.explorer
    return render(request, "stages.html", {"stages": ex.store.stage_counts(), "versions": ex.store.versions(),
                                           "tags": ex.store.tags(), "total": ex.store.count(),
                                           "version": ex.store.table.version, "uri": ex.store.cfg.uri})


# ---- media ---------------------------------------------------------------------------------------------------
def _media_row(ex: Explorer, item_id: str) -> dict:
    rows = ex.store.get([item_id], [KEY, "media_uri", "media_type"]).to_pylist()
    if not rows:
        raise HTTPException(404, f"there is no item {item_id!r} in the store")
    return rows[0]


def media(request: Request) -> Response:
    """The item's file, whole (200), the asked byte range (206) or several (206 multipart), streamed in chunks."""
    ex: Explorer = request.app.state.explorer
    row = _media_row(ex, request.path_params["item_id"])
    try:
        file = open_media(row["media_uri"], row["media_type"] or "item", ex.roots, ex.cfg.media.max_file_mb)
    except MediaRefused as exc:
        raise HTTPException(403, str(exc)) from None
    try:
        asked = byte_ranges(request.headers.get("range"), file.size)
    except RangeNotSatisfiable as exc:
        return Response(str(exc), 416, {"Content-Range": f"bytes */{file.size}"}, media_type="text/plain")
    if asked and len(asked) > 1:
        boundary = secrets.token_hex(16)
        length, body = file.multipart(asked, boundary)
        return StreamingResponse(body, 206, {"Accept-Ranges": "bytes", "Content-Length": str(length)},
                                 media_type=f"multipart/byteranges; boundary={boundary}")
    start, end = asked[0] if asked else (0, file.size - 1)
    headers = {"Accept-Ranges": "bytes", "Content-Length": str(end - start + 1)}
    if asked:
        headers["Content-Range"] = f"bytes {start}-{end}/{file.size}"
    return StreamingResponse(file.read(start, end), 206 if asked else 200, headers, media_type=file.content_type)


def thumb(request: Request) -> Response:
    ex: Explorer = request.app.state.explorer
    row = _media_row(ex, request.path_params["item_id"])
    refusal = ex.roots.refusal(row["media_uri"]) if row["media_uri"] else "this item has no media_uri"
    try:
        if refusal:
            raise MediaError(refusal)
        data = ex.thumbs.get(row[KEY], row["media_uri"], row["media_type"])
    except MediaError as exc:
        log.debug("no thumbnail for %s: %s", row[KEY], exc)
        return Response((HERE / "static" / "no-thumb.svg").read_bytes(), media_type="image/svg+xml",
                        headers={"Cache-Control": "no-store"})
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})


# ---- plumbing ------------------------------------------------------------------------------------------------
TEMPLATES = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True))


def _link(path: str, **params) -> str:
    """A URL with query parameters (lists repeat the key); used by templates for every parameterised link."""
    pairs = [(k, v) for k, values in params.items() for v in (values if isinstance(values, list) else [values])
             if v is not None and v != ""]
    return f"{path}?{urlencode(pairs)}" if pairs else path


TEMPLATES.globals["link"] = _link


def render(request: Request, template: str, context: dict, status: int = 200) -> HTMLResponse:
    ex: Explorer = request.app.state.explorer
    html = TEMPLATES.get_template(template).render(**context, store_uri=ex.store.cfg.uri,
                                                    has_runs=bool(ex.runs), path=request.url.path)
    return HTMLResponse(html, status)


def _int(text: str | None, default: int) -> int:
    try:
        return max(0, int(text)) if text else default
    except ValueError:
        return default


async def http_error(request: Request, exc: Exception) -> Response:
    status, message = (exc.status_code, exc.detail) if isinstance(exc, HTTPException) else (400, str(exc))
    if request.url.path.startswith(("/media/", "/thumbs/")):
        return Response(message, status, media_type="text/plain")
    return render(request, "error.html", {"status": status, "message": message}, status)


class TokenGate:
    """Every request must carry the token: `Authorization: Bearer T`, the `token` query parameter (which sets
    a cookie, so the page's own media and thumbnail requests carry it too), or that cookie. Also sets the
    security headers of every response."""

    def __init__(self, app, token: str | None):
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        from_query = request.query_params.get("token")
        given = [from_query, request.cookies.get(TOKEN_COOKIE)]
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given.append(auth[7:])
        if self.token and not any(g and hmac.compare_digest(g.encode(), self.token.encode()) for g in given):
            response = Response("this explorer needs its token: open it with ?token=... or send "
                                "'Authorization: Bearer ...'", 401, media_type="text/plain")
            return await response(scope, receive, send)
        set_cookie = bool(self.token and from_query and hmac.compare_digest(from_query.encode(), self.token.encode()))

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]
                if set_cookie:
                    headers.append((b"set-cookie", f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; "
                                                   "SameSite=Strict".encode()))
                message = {**message, "headers": headers}
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def build_app(cfg: SeerecConfig, run_dirs: list[Path] = (), token: str | None = None,
              cache_dir: Path | None = None, load_encoder: bool = True) -> Starlette:
    """The explorer over cfg's store; `run_dirs` feed the runs and user pages."""
    from jobs.explore.thumbs import default_cache_dir

    store = ItemStore(cfg.store)
    store.table  # noqa: B018  (a missing store stops here, with its sentence)
    roots = media_roots(cfg)
    runs = {}
    for path in run_dirs:
        path = Path(path)
        if not path.is_dir():
            raise ExploreError(f"--run {path} is not a folder")
        name = path.name if path.name not in runs else f"{path.name}-{len(runs)}"
        runs[name] = path
    media_cfg = cfg.media.model_copy(update={"roots": list(roots.roots or [])})
    ex = Explorer(cfg, store, roots, Thumbnails(cache_dir or default_cache_dir(cfg.store.uri), media_cfg), runs)
    if load_encoder:
        ex.load_encoder()
    else:
        ex.search_problem = "the text encoder was not loaded"
    routes = [Route("/", catalog), Route("/items/{item_id:path}", item), Route("/media/{item_id:path}", media),
              Route("/thumbs/{item_id:path}", thumb), Route("/users", users), Route("/user", user),
              Route("/recommend", new_user), Route("/runs", run_tables), Route("/plot", plot),
              Route("/stages", stages), Mount("/static", StaticFiles(directory=HERE / "static"), name="static")]
    app = Starlette(routes=routes, middleware=[Middleware(TokenGate, token=token)],
                    exception_handlers={HTTPException: http_error, SeerecError: http_error})
    app.state.explorer = ex
    return app
