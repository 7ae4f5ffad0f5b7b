"""The `seerec` command line: every stage, store queries and the demo, all taking `--config` + overrides."""

from __future__ import annotations

import functools
import json
import math
import sys
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, get_args

import typer
import yaml
from rich.console import Console
from rich.table import Table
from typer.core import TyperCommand

from pipeline.config import IngestConfig, SeerecConfig, load_config
from pipeline.errors import SeerecError
from pipeline.logs import interrupted, setup_logging

HELP = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(help="seerec: turn video and image items into recommendation features.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False, context_settings=HELP)
store_app = typer.Typer(help="Inspect the item store: info, versions, restore.", no_args_is_help=True,
                        context_settings=HELP)
app.add_typer(store_app, name="store")
console = Console()
errors = Console(stderr=True, soft_wrap=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]


def overrides_arg(example: str):
    """The overrides argument, with an example that fits the command."""
    return Annotated[list[str] | None, typer.Argument(help=f"Dotted overrides (section.key=value), e.g. {example}.")]


def choices(annotation) -> str:
    """A Literal's values as text that wraps at any width (a `|`-joined list is cut at 80 columns)."""
    return "one of: " + ", ".join(get_args(annotation))


Overrides = overrides_arg("store.uri=./stores/microlens")
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")]


def user_errors(command):
    """Print a user's mistake as one sentence and exit 2, instead of a traceback; Ctrl-C is one line, exit 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SeerecError as exc:
            errors.print(f"[bold red]error:[/] {exc}")
            raise typer.Exit(2) from None
        except KeyboardInterrupt as exc:
            raise typer.Exit(interrupted(exc)) from None

    return wrapper


def _config(config: Path | None, overrides: list[str] | None, verbose: bool = False, **extra: object) -> SeerecConfig:
    setup_logging(verbose)
    pairs = [f"{key}={value}" for key, value in extra.items() if value is not None]
    return load_config(config, [*(overrides or []), *pairs])


@app.command()
@user_errors
def ingest(config: ConfigOption = None, overrides: overrides_arg("ingest.source=microlens") = None,
           verbose: Verbose = False,
           source: Annotated[str | None, typer.Option(help=choices(IngestConfig.model_fields["source"].annotation))
                             ] = None,
           path: Annotated[str | None, typer.Option(help="Manifest file or dataset folder.")] = None,
           limit: Annotated[int | None, typer.Option(help="Load only the first N items.")] = None):
    """Load a catalog (manifest, MicroLens or Amazon layout) into the item store."""
    from jobs.ingest import run_ingest

    run_ingest(_config(config, overrides, verbose,
                       **{"ingest.source": source, "ingest.path": path, "ingest.limit": limit}))


@app.command()
@user_errors
def embed(config: ConfigOption = None, overrides: overrides_arg("embed.text.items_per_batch=64") = None,
          verbose: Verbose = False,
          force: Annotated[bool, typer.Option(help="Re-embed items already done by the same encoder.")] = False):
    """Embed item text (sentence-transformers) and media (open_clip) into vector columns."""
    from jobs.embed import run_embed

    run_embed(_config(config, overrides, verbose), force=force)


@app.command()
@user_errors
def quantize(config: ConfigOption = None, overrides: overrides_arg("quantize.levels=3") = None,
             verbose: Verbose = False,
             assign_only: Annotated[bool, typer.Option(help="Give IDs to new items with the saved tokenizer; "
                                                            "never change existing IDs.")] = False):
    """Turn vector columns into unique semantic IDs (residual k-means or RQ-VAE), with diagnostics."""
    from jobs.quantize import run_quantize

    run_quantize(_config(config, overrides, verbose), assign_only=assign_only)


class ListsModels(TyperCommand):
    """A command whose `--model` help lists the registered models, looked up only when help is shown: the
    registry imports every model (and torch), which `seerec --version` and other commands need not wait for."""

    def format_help(self, ctx, formatter):
        from recommenders.registry import model_choices

        for param in self.params:
            if param.name == "model":
                param.help = "one of: " + ", ".join(model_choices().split("|"))
        return super().format_help(ctx, formatter)


@app.command(cls=ListsModels)
@user_errors
def train(config: ConfigOption = None, overrides: overrides_arg("train.epochs=20") = None, verbose: Verbose = False,
          model: Annotated[str | None, typer.Option(help="A registered model.")] = None,
          data: Annotated[str | None, typer.Option(help="Interaction file (Beauty.txt, *.inter.json, "
                                                        "pairs.csv, Parquet/CSV).")] = None):
    """Train a recommender on interactions + store features; writes runs/<name>/ (metrics, checkpoint, plot)."""
    from jobs.train import run_training

    run_training(_config(config, overrides, verbose, **{"train.model": model, "train.data.path": data}))


@app.command()
@user_errors
def compare(config: ConfigOption = None, overrides: overrides_arg("train.epochs=20") = None, verbose: Verbose = False,
            models: Annotated[str | None, typer.Option(help="Comma-separated entries like "
                                                            "'popularity,sasrec,two_tower:text_vec'.")] = None):
    """Train several models/feature sets under one evaluation; writes a Markdown table, a CSV and a bar chart."""
    from jobs.train import run_comparison

    listed = f"[{models}]" if models else None
    cfg = _config(config, overrides, verbose, **{"compare.models": listed})
    table = run_comparison(cfg)
    print_comparison(table.to_dict("records"), Path(cfg.train.runs_dir) / cfg.compare.name / "compare.md")


# The columns a comparison or an ablation too wide for the terminal keeps (the file named then has them all).
COMPARE_KEY_COLUMNS = ("model", "features", "overrides", "valid_ndcg@10", "test_recall@10", "test_ndcg@10",
                       "best_epoch")
ABLATE_KEY_COLUMNS = ("split", "feature_set", "model", "masked_ndcg@10", "unmasked_ndcg@10", "gain_ndcg@10",
                      "significant")


def print_comparison(rows: list[dict], everything: Path, title: str = "comparison (test)",
                     key_columns: tuple[str, ...] = COMPARE_KEY_COLUMNS) -> None:
    """The comparison table, or, when it is wider than the terminal, its key columns and where the rest is."""
    unbounded = console.options.update_width(10_000)  # measured at its natural width, not cut to the terminal
    if rows and console.measure(_table(rows, title), options=unbounded).maximum > console.width:
        rows = [{k: v for k, v in row.items() if k in key_columns} for row in rows]
        _print_table(rows, f"{title}, key columns")
        console.print(f"the full table is wider than the terminal; every column is in {everything}")
    else:
        _print_table(rows, title)


@app.command()
@user_errors
def recommend(run_dir: Annotated[Path, typer.Argument(help="Run folder written by `seerec train`.")],
              user: Annotated[str | None, typer.Option(help="Top k for this user of the run.")] = None,
              history: Annotated[str | None, typer.Option(help="Top k for a new user with these item ids "
                                                               "(comma-separated, oldest first).")] = None,
              all_users: Annotated[bool, typer.Option("--all", help="Every user of the run, as a Ray Data job "
                                                                    "(needs --out).")] = False,
              out: Annotated[str | None, typer.Option(help="--all output: a .parquet file, a LanceDB folder, or "
                                                           "'store' (a table in the run's item store).")] = None,
              k: Annotated[int | None, typer.Option("-k", help="How many items per user (default 10).")] = None,
              include_seen: Annotated[bool, typer.Option(help="Also recommend items the user already has.")
                                      ] = False,
              as_json: Annotated[bool, typer.Option("--json", help="Print one user's items as JSON.")] = False,
              config: ConfigOption = None, overrides: overrides_arg("recommend.actors=2") = None,
              verbose: Verbose = False):
    """Recommend items from a trained run: for one user, a new user's history, or all users (Parquet/LanceDB)."""
    if sum([user is not None, history is not None, all_users]) != 1:
        raise typer.BadParameter("give exactly one of --user, --history or --all")
    extra = {"recommend.run_dir": str(run_dir), "recommend.k": k, "recommend.out": out,
             "recommend.exclude_seen": "false" if include_seen else None}
    cfg = _config(config, overrides, verbose, **extra)
    if as_json:
        setup_logging(verbose, to_stderr=True)  # stdout carries the JSON alone
    if all_users:
        from jobs.recommend import run_recommend

        run_recommend(cfg)
        return
    from recommenders.serve import Server

    rcfg = cfg.recommend
    server = Server.from_run(rcfg.run_dir, rcfg.device)
    if user is not None:
        rows = server.for_user(user, rcfg.k, rcfg.exclude_seen).to_pylist()
    else:
        rows = server.for_history(history.split(","), rcfg.k, rcfg.exclude_seen).to_pylist()
    titles = server.titles([r["item_id"] for r in rows if r["item_id"] is not None])
    for row in rows:
        row["title"] = titles.get(row["item_id"])
    if as_json:
        typer.echo(json.dumps(rows))
        return
    shown = ["rank", "item_id", *(["title"] if titles else []), "score"]
    who = f"user {user}" if user is not None else "a new user"
    if rows and rows[0]["note"]:
        console.print(f"{who}: {rows[0]['note']}")
        return
    seen = "seen items excluded" if rcfg.exclude_seen else "seen items included"
    _print_table([{c: r[c] for c in shown} for r in rows], f"top {rcfg.k} for {who} ({server.model.name}, {seen})")


@app.command()
@user_errors
def ablate(config: ConfigOption = None, overrides: overrides_arg("ablate.feature_sets=[title_vec,desc_vec]") = None,
           verbose: Verbose = False):
    """Feature sets x models on one shared split: the ablation table (gains, significance), CSV, JSON and chart."""
    from jobs.ablate import run_ablation

    cfg = _config(config, overrides, verbose)
    table = run_ablation(cfg)
    # One row per cell, as `seerec compare` prints its runs; ablation.md holds the tables in the paper's shape.
    print_comparison(table.to_dict("records"), Path(cfg.train.runs_dir) / cfg.ablate.name / "ablation.csv",
                     "ablation cells (test)", ABLATE_KEY_COLUMNS)


@app.command()
@user_errors
def describe(config: ConfigOption = None, overrides: overrides_arg("describe.model=./models/tiny-qwen2-vl") = None,
             verbose: Verbose = False,
             force: Annotated[bool, typer.Option(help="Redo items already described by the same model and "
                                                      "prompt.")] = False):
    """Write a description of every video and image item with a multimodal LLM."""
    from jobs.describe import run_describe

    run_describe(_config(config, overrides, verbose), force=force)


@app.command("describe-audio")
@user_errors
def describe_audio(config: ConfigOption = None, overrides: Overrides = None, verbose: Verbose = False,
                   force: Annotated[bool, typer.Option(help="Redo items already described by the same model and "
                                                            "prompt.")] = False):
    """Write what every video and audio item sounds like with an audio LLM (or frames and sound, omni)."""
    from jobs.describe_audio import run_describe_audio

    run_describe_audio(_config(config, overrides, verbose), force=force)


@app.command()
@user_errors
def transcribe(config: ConfigOption = None, overrides: Overrides = None, verbose: Verbose = False,
               force: Annotated[bool, typer.Option(help="Redo items already transcribed by the same model and "
                                                        "settings.")] = False):
    """Transcribe the speech of every video and audio item with faster-whisper."""
    from jobs.transcribe import run_transcribe

    run_transcribe(_config(config, overrides, verbose), force=force)


@app.command(context_settings={"ignore_unknown_options": True})
@user_errors
def submit(stage: Annotated[str, typer.Argument(help="ingest|embed|describe|describe_audio|transcribe|"
                                                          "quantize|train|recommend|ablate")],
           address: Annotated[str, typer.Option(help="Dashboard address of the cluster's head, e.g. "
                                                     "http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, "
                                                     "then $RAY_ADDRESS, as Ray's own CLI).",
                                                envvar=["RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"])],
           config: ConfigOption = None,
           args: Annotated[list[str] | None, typer.Argument(help="Overrides (section.key=value) and the stage's "
                                                                 "flags, e.g. --force.")] = None,
           working_dir: Annotated[Path, typer.Option(help="Folder uploaded as the job's working dir.")] = Path("."),
           env: Annotated[list[str] | None, typer.Option(help="KEY=VALUE for the job's environment; "
                                                              "repeatable.")] = None,
           pip: Annotated[list[str] | None, typer.Option(help="Extra pip requirement for the job; "
                                                              "repeatable.")] = None,
           num_cpus: Annotated[float | None, typer.Option(help="CPUs reserved for the job's driver.")] = None,
           num_gpus: Annotated[float | None, typer.Option(help="GPUs reserved for the job's driver.")] = None,
           resources: Annotated[str | None, typer.Option(help="Custom resources for the driver, as JSON.")] = None,
           token_file: Annotated[Path | None, typer.Option(help="Token of a cluster with token authentication "
                                                                "(default: $RAY_AUTH_TOKEN).")] = None,
           wait: Annotated[bool, typer.Option(help="Follow the job's logs until it ends.")] = True):
    """Run a stage on a Ray cluster as a Ray job; exits 0 SUCCEEDED, 1 FAILED, 3 STOPPED, 130 on Ctrl-C."""
    from jobs.submit import submit as submit_job

    if bad := [item for item in env or [] if "=" not in item]:
        raise typer.BadParameter(f"--env {bad[0]!r} must look like KEY=VALUE")
    pairs = dict(item.partition("=")[::2] for item in env or [])
    raise typer.Exit(submit_job(stage, address, config, args or [], working_dir=working_dir, env=pairs, pip=pip or [],
                                num_cpus=num_cpus, num_gpus=num_gpus, resources=resources, token_file=token_file,
                                wait=wait))


# --kind: (builder in jobs.tiny_models, architecture, the overrides that use the checkpoint at {path})
TEST_MODELS = {"qwen2-vl": ("make_tiny_qwen2_vl", "Qwen2-VL", "describe.model={path}"),
               "clip": ("make_tiny_clip", "CLIP", "embed.image.model={path} embed.image.pretrained=null"),
               "qwen2-audio": ("make_tiny_qwen2_audio", "Qwen2-Audio", "describe_audio.model={path}"),
               "qwen2.5-omni": ("make_tiny_qwen2_5_omni", "Qwen2.5-Omni",
                                "describe_audio.model={path} describe_audio.modality=omni"),
               "clap": ("make_tiny_clap", "CLAP", "embed.audio.model={path}")}


@app.command("make-test-model")
def make_test_model(out: Annotated[Path, typer.Argument(help="Folder to write the checkpoint to.")],
                    kind: Annotated[str, typer.Option(help=f"Architecture, one of: {', '.join(TEST_MODELS)}.")
                                    ] = "qwen2-vl",
                    seed: int = 0):
    """Build a tiny random-weight checkpoint (offline) for tests and the demo; its outputs are meaningless."""
    from jobs import tiny_models

    if kind not in TEST_MODELS:
        raise typer.BadParameter(f"--kind {kind!r} is not one of {', '.join(TEST_MODELS)}")
    builder, name, hint = TEST_MODELS[kind]
    setup_logging()
    path = getattr(tiny_models, builder)(out, seed=seed)
    console.print(f"wrote a tiny random-weight {name} to {out}; use it with {hint.format(path=path)}")


SEARCH_COLUMNS = "item_id,media_type,title,_distance"


@app.command()
@user_errors
def search(config: ConfigOption = None, overrides: Overrides = None,
           text: Annotated[str | None, typer.Option(help="Find items matching this text.")] = None,
           item: Annotated[str | None, typer.Option(help="Find neighbours of this item_id.")] = None,
           image: Annotated[str | None, typer.Option(help="Find items that look like this image or video.")] = None,
           column: Annotated[str | None, typer.Option(help="Vector column (default: text_vec for --text, "
                                                             "clip_vec for --image).")] = None,
           where: Annotated[list[str] | None,
                            typer.Option(help="Filter like 'media_type = video'; repeatable.")] = None,
           k: Annotated[int, typer.Option("-k", min=1, help="How many results.")] = 10,
           columns: Annotated[str, typer.Option(help="Comma-separated columns to show; _distance is the "
                                                     "distance to the query.")] = SEARCH_COLUMNS,
           as_json: Annotated[bool, typer.Option("--json", help="Print the results as a JSON array.")] = False):
    """Search the store by text, by item (neighbours) or by image, with optional filters."""
    from extractors.search import image_query_vector, text_query_vector
    from pipeline.filters import to_sql
    from pipeline.store import ItemStore, StoreError

    if sum(x is not None for x in (text, item, image)) != 1:
        raise typer.BadParameter("give exactly one of --text, --item or --image")
    cfg = _config(config, overrides)
    store = ItemStore(cfg.store)
    conditions = where or []
    shown = [c.strip() for c in columns.split(",") if c.strip()]
    schema = store.schema
    store.require_columns([c for c in shown if c != "_distance"], schema)
    to_sql(conditions, schema)  # a bad filter is refused before any model loads
    if item is not None:
        results = store.neighbours(item, column or cfg.embed.text.column, k, conditions)
    elif text is not None:
        column = column or cfg.embed.text.column
        results = store.search_vector(column, text_query_vector(store, cfg, column, text), k, conditions)
    else:
        column = column or cfg.embed.image.column
        results = store.search_vector(column, image_query_vector(store, cfg, column, image), k, conditions)
    if missing := [c for c in shown if c not in results.column_names]:
        raise StoreError(f"search results have no column {missing[0]!r}")
    rows = results.select(shown).to_pylist()
    if as_json:
        typer.echo(json.dumps(rows, default=str))
    else:
        _print_table(rows, f"top {k}")


@store_app.command("info")
@user_errors
def store_info(config: ConfigOption = None, overrides: Overrides = None):
    """Rows, columns and how many items each stage has done or failed."""
    from pipeline.store import ItemStore

    store = ItemStore(_config(config, overrides).store)
    rows = [{"stage column": r["column"], "filled": r["filled"], "errors": r["errors"]} for r in store.stage_counts()]
    console.print(f"{store.cfg.uri} · table {store.cfg.table} · {store.count()} items · version {store.table.version}")
    _print_table(rows, "stages")


@store_app.command("versions")
@user_errors
def store_versions(config: ConfigOption = None, overrides: Overrides = None):
    """List the table's versions (every commit is one)."""
    from pipeline.store import ItemStore

    _print_table(ItemStore(_config(config, overrides).store).versions(), "versions")


@store_app.command("restore")
@user_errors
def store_restore(version: int, config: ConfigOption = None, overrides: Overrides = None):
    """Make an older version the latest one (a new commit; nothing is deleted)."""
    from pipeline.store import ItemStore

    store = ItemStore(_config(config, overrides).store)
    store.restore(version)
    console.print(f"restored version {version}; the table is now at version {store.table.version}")


@app.command()
@user_errors
def explore(config: ConfigOption = None, overrides: Overrides = None, verbose: Verbose = False,
            run: Annotated[list[Path] | None, typer.Option("--run", help="A run or comparison folder for the users "
                                                                        "and runs pages; repeatable.")] = None,
            port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
            host: Annotated[str, typer.Option(help="Address to bind; anything but loopback needs --token.")
                            ] = "127.0.0.1",
            token: Annotated[str | None, typer.Option(help="Token every request must carry (?token=, a cookie, "
                                                           "or Authorization: Bearer).",
                                                      envvar="SEEREC_EXPLORE_TOKEN")] = None,
            cache: Annotated[Path | None, typer.Option(help="Thumbnail folder (default: beside the store, "
                                                            "<store>.explore-cache).")] = None):
    """Browse the item store in a web browser: items, media, descriptions, neighbours, stages, runs (read-only)."""
    from jobs.explore import serve

    serve(_config(config, overrides, verbose), run or [], host=host, port=port, token=token, cache_dir=cache)


@app.command("config")
@user_errors
def show_config(config: ConfigOption = None, overrides: overrides_arg("embed.text.model=BAAI/bge-base-en-v1.5") = None):
    """Print the resolved configuration (file + overrides + defaults) as YAML."""
    cfg = load_config(config, overrides or [])
    typer.echo("# Relative paths (store.uri, ingest.path, media.roots, model folders, train.data.path, output\n"
               f"# folders) resolve against the directory seerec runs in, not the config file's folder: {Path.cwd()}")
    typer.echo(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


@app.command()
@user_errors
def demo(out: Annotated[Path, typer.Option(help="Folder for the catalog, store and results.")] = Path("demo-out"),
         items: Annotated[int, typer.Option(help="Synthetic items to generate.")] = 300,
         users: Annotated[int, typer.Option(help="Synthetic users to generate.")] = 400,
         seed: int = 0, verbose: Verbose = False):
    """Run the whole pipeline offline on a generated catalog of real videos and images."""
    from jobs.demo import run_demo

    setup_logging(verbose)
    run_demo(out, n_items=items, n_users=users, seed=seed)


def _table(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    for name in rows[0] if rows else ["(none)"]:
        table.add_column(str(name))
    for row in rows:
        table.add_row(*(_cell(v) for v in row.values()))
    return table


def _cell(value: object) -> str:
    """A table cell: floats to 4 decimals, NaN (no value, e.g. a baseline cell's gain) as '-'."""
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _print_table(rows: list[dict], title: str) -> None:
    console.print(_table(rows, title))


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"seerec {package_version('seerec')}")
        raise typer.Exit()


@app.callback()
def options(version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                                  help="Print the version and exit.")] = False):
    """seerec: turn video and image items into recommendation features."""


def main() -> None:
    sys.exit(app())


if __name__ == "__main__":
    main()
