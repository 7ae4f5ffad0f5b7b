"""Tests for pipeline.config: defaults, YAML plus dotted overrides, and one-line errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, SeerecConfig, load_config, validate_config


def _write(tmp_path: Path, text: str, name: str = "seerec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(path=None, overrides=()) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    message = str(info.value)
    assert "\n" not in message, f"config errors must be one line, got {message!r}"
    return message


def test_defaults_load_without_file_or_overrides():
    cfg = load_config()
    assert isinstance(cfg, SeerecConfig)
    assert cfg == SeerecConfig()
    assert cfg.store.uri == "./seerec-store" and cfg.store.table == "items"
    assert cfg.store.index_type == "ivf_hnsw_sq" and cfg.store.metric == "cosine"
    assert cfg.media.num_frames == 8
    assert cfg.embed.text.column == "text_vec" and cfg.embed.image.column == "clip_vec"
    assert cfg.embed.image.pretrained == "laion2b_s34b_b79k"
    assert cfg.ray.address is None


def test_empty_yaml_file_means_defaults(tmp_path):
    assert load_config(_write(tmp_path, "")) == SeerecConfig()


def test_yaml_file_then_overrides_win(tmp_path):
    path = _write(tmp_path, """
store:
  uri: /data/store
  index_type: ivf_pq
embed:
  text:
    items_per_batch: 8
    template: "{title}"
media:
  num_frames: 4
""")
    cfg = load_config(path, ["embed.text.items_per_batch=64", "embed.image.pretrained=null", "media.fps=2.5",
                             "ray.progress_bars=true", "store.storage_options.aws_region=eu-west-1"])
    assert cfg.store.uri == "/data/store"
    assert cfg.store.index_type == "ivf_pq"
    assert cfg.embed.text.items_per_batch == 64 and type(cfg.embed.text.items_per_batch) is int
    assert cfg.embed.image.pretrained is None
    assert cfg.media.num_frames == 4  # from the file, untouched by overrides
    assert cfg.media.fps == 2.5
    assert cfg.ray.progress_bars is True
    assert cfg.store.storage_options == {"aws_region": "eu-west-1"}


def test_override_value_keeps_text_after_first_equals_sign():
    cfg = load_config(overrides=["store.uri=s3://bucket/path?a=b"])
    assert cfg.store.uri == "s3://bucket/path?a=b"


def test_accepts_path_as_string(tmp_path):
    path = _write(tmp_path, "store:\n  table: things\n")
    assert load_config(str(path)).store.table == "things"


@pytest.mark.parametrize(("override", "key", "suggestion"), [
    ("stor.uri=x", "stor", "store"),
    ("store.urii=x", "store.urii", "uri"),
    ("embed.imagee.model=x", "embed.imagee", "image"),
    ("embed.text.items_per_bach=3", "embed.text.items_per_bach", "items_per_batch"),
])
def test_unknown_key_names_dotted_key_and_close_match(override, key, suggestion):
    message = _error(overrides=[override])
    assert f"'{key}'" in message
    assert "not a known setting" in message
    assert f"did you mean '{suggestion}'" in message


def test_unknown_key_from_yaml_file(tmp_path):
    message = _error(_write(tmp_path, "media:\n  num_frame: 4\n"))
    assert "'media.num_frame'" in message and "did you mean 'num_frames'" in message


def test_unknown_key_without_close_match_has_no_suggestion():
    message = _error(overrides=["zzzzzz=1"])
    assert "'zzzzzz'" in message and "did you mean" not in message


@pytest.mark.parametrize(("override", "key"), [
    ("media.num_frames=0", "media.num_frames"),
    ("media.num_frames=513", "media.num_frames"),
    ("store.index_type=foo", "store.index_type"),
    ("store.metric=manhattan", "store.metric"),
    ("store.index_min_rows=10", "store.index_min_rows"),
    ("store.write_batch_rows=abc", "store.write_batch_rows"),
    ("media.fps=0", "media.fps"),
    ("embed.text.items_per_batch=0", "embed.text.items_per_batch"),
    ("embed.image.frames_per_batch=0", "embed.image.frames_per_batch"),
])
def test_bad_value_names_the_key(override, key):
    message = _error(overrides=[override])
    assert message.startswith(f"config key '{key}' is invalid")
    assert "(got " in message


def test_bad_value_from_yaml_file_names_the_key(tmp_path):
    message = _error(_write(tmp_path, "store:\n  index_type: foo\n"))
    assert "'store.index_type'" in message and "'foo'" in message


def test_section_given_a_value_is_rejected():
    message = _error(overrides=["store=1"])
    assert "'store'" in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_non_mapping_yaml_is_rejected(tmp_path, text):
    message = _error(_write(tmp_path, text))
    assert "must hold a mapping" in message


@pytest.mark.parametrize("text", ["store:\n  uri: [a\n", "a: b: c\n", "store:\n\turi: x\n"])
def test_invalid_yaml_is_one_line_with_position(tmp_path, text):
    path = _write(tmp_path, text)
    message = _error(path)
    assert str(path) in message and "not valid YAML" in message
    assert "line " in message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    message = _error(path)
    assert str(path) in message and "does not exist" in message


def test_directory_is_not_a_config_file(tmp_path):
    assert "does not exist" in _error(tmp_path)


@pytest.mark.parametrize("override", ["store.uri", "=x", "  =x", ""])
def test_override_must_have_key_and_equals(override):
    message = _error(overrides=[override])
    assert "must look like section.key=value" in message


def test_override_into_a_value_is_rejected():
    message = _error(overrides=["store.uri=x", "store.uri.deeper=1"])
    assert "'uri' is a value, not a section" in message


def test_embed_columns_must_differ():
    message = _error(overrides=["embed.text.column=clip_vec"])
    assert "embed.text.column and embed.image.column must name different store columns" in message
    assert "Value error" not in message


def test_embed_columns_may_be_swapped():
    cfg = load_config(overrides=["embed.text.column=a", "embed.image.column=b"])
    assert (cfg.embed.text.column, cfg.embed.image.column) == ("a", "b")


def test_validate_config_directly():
    cfg = validate_config({"store": {"uri": "/x"}})
    assert cfg.store.uri == "/x"
    with pytest.raises(ConfigError, match="'ray.num_cpus'"):
        validate_config({"ray": {"num_cpus": 0}})


def test_assignment_is_validated():
    cfg = load_config()
    with pytest.raises(ValueError):
        cfg.media.num_frames = 0


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


@pytest.mark.parametrize(("override", "new_keys"), [
    ("embed.text.batch_size=64", ["embed.text.items_per_batch", "embed.text.encode_batch_size"]),
    ("embed.image.batch_size=8", ["embed.image.items_per_batch", "embed.image.frames_per_batch"]),
    ("describe.batch_size=4", ["describe.items_per_batch"]),
])
def test_old_batch_size_key_names_its_replacements(override, new_keys):
    message = _error(overrides=[override])
    assert message.startswith(f"config key '{override.partition('=')[0]}' was replaced by ")
    assert all(f"'{key}'" in message for key in new_keys)


@pytest.mark.parametrize("template", ["{description}", "{title} - {description}", "{title}: {meta[brand]}",
                                      "[{title}]", "'{title}'", "# {title}", "yes", "42"])
def test_text_override_stays_the_text_typed(template):
    cfg = load_config(overrides=[f"embed.text.template={template}", f"describe.prompts.title_template={template}"])
    assert cfg.embed.text.template == template and cfg.describe.prompts.title_template == template


def test_text_override_that_looks_like_a_number_stays_text():
    assert load_config(overrides=["describe.prompts.version=2"]).describe.prompts.version == "2"
    assert load_config(overrides=["store.storage_options.aws_region=1"]).store.storage_options == {"aws_region": "1"}


def test_optional_text_override_accepts_null_and_text():
    assert load_config(overrides=["embed.image.pretrained=null"]).embed.image.pretrained is None
    assert load_config(overrides=["train.name="]).train.name is None
    assert load_config(overrides=["train.name={x}"]).train.name == "{x}"


def test_non_text_overrides_are_still_read_as_yaml():
    cfg = load_config(overrides=["embed.text.items_per_batch=64", "media.fps=2.5", "ray.progress_bars=false",
                                 "train.features=[text_vec, clip_vec]", "embed.where=[media_type = video]",
                                 "train.cpu_threads=null", "ray.num_gpus=0"])
    assert cfg.embed.text.items_per_batch == 64 and cfg.media.fps == 2.5 and cfg.ray.progress_bars is False
    assert cfg.train.features == ["text_vec", "clip_vec"] and cfg.embed.where == ["media_type = video"]
    assert cfg.train.cpu_threads is None and cfg.ray.num_gpus == 0


def test_unknown_key_with_a_mapping_value_is_still_named():
    assert _error(overrides=["embed.text.templat={description}"]).startswith(
        "config key 'embed.text.templat' is not a known setting (did you mean 'template'?)")
