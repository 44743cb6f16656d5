"""Typed config: build(), apply_overrides() and read_yaml() refuse unknown keys and
wrong types with one-line messages naming the key (and the file and line)."""

from __future__ import annotations

import shutil

import pytest

from kfnlp import catalog
from kfnlp.assets import resolve_model_ref
from kfnlp.catalog import MlmAdaptConfig, load_config
from kfnlp.config import apply_overrides, blame_file, build, from_json, read_yaml, to_dict, yaml_key_line
from kfnlp.errors import ConfigError, InputError
from kfnlp.refs import check_model_ref, preflight
from kfnlp.stages.preprocess import PreprocessConfig

ENTRY = catalog.get("mlm-adapt")


def _build(*overrides: str) -> MlmAdaptConfig:
    return build(MlmAdaptConfig, apply_overrides({}, overrides))


def _config_error(*overrides: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _build(*overrides)
    assert "\n" not in str(info.value)
    return info.value


# ---- unknown keys -------------------------------------------------------------


def test_unknown_key_names_the_full_key_and_lists_known_ones():
    exc = _config_error("train_mlm.learnin_rate=1e-4")
    message = str(exc)
    assert message.startswith("unknown config key train_mlm.learnin_rate;")
    assert "known keys in train_mlm:" in message
    assert "learning_rate" in message and "max_steps" in message
    assert exc.key == "train_mlm.learnin_rate"


def test_unknown_section_lists_the_sections():
    message = str(_config_error("trainmlm.max_steps=5"))
    assert "unknown config key trainmlm;" in message
    for section in ("preprocess", "mask_eval", "train_mlm", "evaluate", "register", "model"):
        assert section in message


def test_unknown_key_without_section_prefix():
    with pytest.raises(ConfigError, match=r"^unknown config key colour; known keys: chunk_size, group_size"):
        build(PreprocessConfig, {"colour": "red"})


def test_unknown_non_string_key_does_not_crash():
    with pytest.raises(ConfigError, match="unknown config key 1"):
        build(PreprocessConfig, {1: "x", "source": "y"})


# ---- wrong types --------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"train_mlm": {"max_steps": "ten"}}, "train_mlm.max_steps: expected an integer, got 'ten'"),
        ({"train_mlm": {"max_steps": 1.5}}, "train_mlm.max_steps: expected an integer, got 1.5"),
        ({"train_mlm": {"max_steps": True}}, "train_mlm.max_steps: expected an integer, got True"),
        ({"train_mlm": {"max_steps": None}}, "train_mlm.max_steps: expected an integer, got None"),
        ({"train_mlm": {"learning_rate": "fast"}}, "train_mlm.learning_rate: expected a number, got 'fast'"),
        ({"train_mlm": {"sparse_head": "maybe"}}, "train_mlm.sparse_head: expected true/false, got 'maybe'"),
        ({"preprocess": {"max_documents": "lots"}}, "preprocess.max_documents: expected an integer or null"),
        ({"mask_eval": {"strategy": "random"}}, "mask_eval.strategy: expected one of 'token', 'whole_word'"),
        ({"evaluate": {"prompts": 5}}, "evaluate.prompts: expected a list of strings, got 5"),
        ({"evaluate": {"prompts": ["ok", {"a": 1}]}}, "evaluate.prompts[1]: expected a string"),
        ({"register": {"model_name": ["x"]}}, "register.model_name: expected a string, got ['x']"),
        ({"register": {"model_name": False}}, "got False (YAML reads unquoted yes/no/on/off as true/false: quote"),
        ({"mask_eval": {"strategy": True}}, "expected one of 'token', 'whole_word', got True (YAML reads"),
        ({"train_mlm": 5}, "train_mlm: expected a mapping of keys, got 5"),
        ({"model": {"name": "x"}}, "model: expected a string"),
    ],
    ids=lambda v: None if isinstance(v, dict) else v[:40],
)
def test_wrong_types_say_what_was_expected(data, fragment):
    with pytest.raises(ConfigError) as info:
        build(MlmAdaptConfig, data)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_wrong_type_error_carries_the_key():
    with pytest.raises(ConfigError) as info:
        build(MlmAdaptConfig, {"preprocess": {"chunk_size": "big"}})
    assert info.value.key == "preprocess.chunk_size"


# ---- --set coercion ------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "path", "expected"),
    [
        ("preprocess.max_documents=500", "preprocess.max_documents", 500),
        ("preprocess.max_documents=1_000", "preprocess.max_documents", 1000),
        ("preprocess.max_documents=2.0", "preprocess.max_documents", 2),
        ("preprocess.max_documents=null", "preprocess.max_documents", None),
        ("preprocess.max_documents=None", "preprocess.max_documents", None),
        ("preprocess.max_documents=~", "preprocess.max_documents", None),
        ("preprocess.hf_config=null", "preprocess.hf_config", None),
        ("preprocess.hf_config=plain_text", "preprocess.hf_config", "plain_text"),
        ("preprocess.test_size=0.25", "preprocess.test_size", 0.25),
        ("preprocess.source=data/*.csv", "preprocess.source", "data/*.csv"),
        ("preprocess.source=a=b.csv", "preprocess.source", "a=b.csv"),
        ("preprocess.text_column=answers.text", "preprocess.text_column", "answers.text"),
        ("train_mlm.learning_rate=5e-4", "train_mlm.learning_rate", 5e-4),
        ("train_mlm.learning_rate=1", "train_mlm.learning_rate", 1.0),
        ("train_mlm.sparse_head=false", "train_mlm.sparse_head", False),
        ("train_mlm.sparse_head=no", "train_mlm.sparse_head", False),
        ("train_mlm.sparse_head=off", "train_mlm.sparse_head", False),
        ("train_mlm.sparse_head=0", "train_mlm.sparse_head", False),
        ("train_mlm.sparse_head=True", "train_mlm.sparse_head", True),
        ("train_mlm.eval_strategy=no", "train_mlm.eval_strategy", "no"),
        ("train_mlm.mixed_precision=no", "train_mlm.mixed_precision", "no"),
        ("train_mlm.mask_probability=null", "train_mlm.mask_probability", None),
        ("train_mlm.mask_probability=0.3", "train_mlm.mask_probability", 0.3),
        ("train_mlm.masking=whole_word", "train_mlm.masking", "whole_word"),
        ("mask_eval.strategy=TOKEN", "mask_eval.strategy", "token"),
        ("register.model_name=007", "register.model_name", "007"),
        ("register.model_name='my model'", "register.model_name", "my model"),
        ('register.model_name="quoted"', "register.model_name", "quoted"),
        ('evaluate.prompts=["A [MASK] film.", "B [MASK]."]', "evaluate.prompts", ["A [MASK] film.", "B [MASK]."]),
        ("evaluate.prompts=[one, two]", "evaluate.prompts", ["one", "two"]),
        ("evaluate.prompts=Just one [MASK].", "evaluate.prompts", ["Just one [MASK]."]),
        ("evaluate.prompts=[]", "evaluate.prompts", []),
        ("model=builtin:splade-tiny", "model", "builtin:splade-tiny"),
    ],
)
def test_set_strings_are_coerced_to_the_field_type(override, path, expected):
    config = _build(override)
    value = config
    for part in path.split("."):
        value = getattr(value, part)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("train_mlm.max_steps=ten", "train_mlm.max_steps: expected an integer, got 'ten'"),
        ("train_mlm.max_steps=1.5", "train_mlm.max_steps: expected an integer, got '1.5'"),
        ("train_mlm.max_steps=", "train_mlm.max_steps: expected an integer, got ''"),
        ("train_mlm.learning_rate=fast", "train_mlm.learning_rate: expected a number, got 'fast'"),
        ("train_mlm.sparse_head=maybe", "train_mlm.sparse_head: expected true/false, got 'maybe'"),
        ("train_mlm.mask_probability=high", "train_mlm.mask_probability: expected a number or null, got 'high'"),
        ("preprocess.max_documents=all", "preprocess.max_documents: expected an integer or null, got 'all'"),
        ("mask_eval.strategy=span", "mask_eval.strategy: expected one of 'token', 'whole_word', got 'span'"),
        ("evaluate.prompts=[a, b", "evaluate.prompts: expected a list like [a, b]"),
        ("evaluate.prompts=[[MASK] is, b]", "evaluate.prompts: expected a list like [a, b]"),
        ("evaluate.top_k=[1]", "evaluate.top_k: expected an integer, got '[1]'"),
        ("train_mlm.eval_strategy=never", "train_mlm.eval_strategy: expected one of 'epoch', 'steps', 'no'"),
        ("train_mlm=5", "train_mlm is a config section; set one of its keys"),
        ("train_mlm.max_steps.deep=1", "train_mlm.max_steps is a value, not a config section"),
        ("model.name=x", "--set 'model.name=x': model is a value, not a config section"),
    ],
)
def test_bad_set_values(override, fragment):
    defaults = read_yaml(ENTRY.defaults_file)
    with pytest.raises(ConfigError) as info:
        build(MlmAdaptConfig, apply_overrides(defaults, [override]))
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("override", ["max_steps", "=5", "", "a..b=1", ".a=1", "a.=1"])
def test_set_needs_key_equals_value(override):
    with pytest.raises(ConfigError, match=r"expected KEY=VALUE, e\.g\. train_mlm\.max_steps=100"):
        apply_overrides({}, [override])


def test_apply_overrides_does_not_change_its_input():
    data = {"train_mlm": {"max_steps": 3}}
    out = apply_overrides(data, ["train_mlm.max_steps=7", "preprocess.source=x.csv"])
    assert data == {"train_mlm": {"max_steps": 3}}
    assert out == {"train_mlm": {"max_steps": "7"}, "preprocess": {"source": "x.csv"}}


def test_later_set_wins():
    assert _build("train_mlm.max_steps=5", "train_mlm.max_steps=9").train_mlm.max_steps == 9


# ---- __post_init__ range checks ---------------------------------------------------


@pytest.mark.parametrize(
    ("override", "section", "fragment"),
    [
        ("preprocess.test_size=1.5", "preprocess", "test_size must be between 0 and 1"),
        ("preprocess.test_size=0", "preprocess", "test_size must be between 0 and 1"),
        ("preprocess.chunk_size=1", "preprocess", "chunk_size must be at least 2, got 1"),
        ("preprocess.max_documents=1", "preprocess", "max_documents must be at least 2"),
        ("preprocess.group_size=-1", "preprocess", "group_size must be >= 0"),
        ("mask_eval.probability=1.5", "mask_eval", "probability must be between 0 and 1"),
        ("train_mlm.learning_rate=0", "train_mlm", "learning_rate must be > 0"),
        ("train_mlm.batch_size=0", "train_mlm", "batch_size must be >= 1"),
        ("train_mlm.mask_probability=0", "train_mlm", "mask_probability must be between 0 and 1"),
        ("evaluate.top_k=0", "evaluate", "top_k must be >= 1"),
        ("register.model_name=  ", "register", "model_name must not be empty"),
    ],
)
def test_range_checks_become_config_errors_naming_the_section(override, section, fragment):
    exc = _config_error(override)
    assert str(exc).startswith(f"{section}: ")
    assert fragment in str(exc)
    assert exc.key == section


# ---- YAML files -------------------------------------------------------------------


def test_read_yaml_reads_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbftrain_mlm:\n  max_steps: 10\n")
    assert read_yaml(path) == {"train_mlm": {"max_steps": 10}}


def test_read_yaml_empty_file_is_empty_mapping(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set\n")
    assert read_yaml(path) == {}


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"train_mlm:\n  max_steps: 10\n  batch_size: [1, 2\n", ":4: invalid YAML: did not find expected ',' or ']'"),
        (b"train_mlm:\n  max_steps: 10\n bad_indent: 1\n", ":3: invalid YAML"),
        (b"a: 1\n\tb: 2\n", ":2: invalid YAML"),
        (b"train_mlm:\n  model_name: caf\xe9\n", ":2: not UTF-8 text (byte 0xe9"),
        (b"- train_mlm\n- preprocess\n", ": expected a mapping of config sections at the top level, got list"),
        (b"just a string\n", ": expected a mapping of config sections at the top level, got str"),
    ],
    ids=["unclosed-list", "bad-indent", "tab", "not-utf8", "list", "scalar"],
)
def test_bad_yaml_names_file_and_line(tmp_path, content, fragment):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        read_yaml(path)
    message = str(info.value)
    assert message.startswith(f"{path}{fragment}") or message.startswith(str(path)) and fragment in message
    assert "\n" not in message


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        read_yaml(tmp_path / "nope.yaml")


def test_yaml_key_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# comment\nmodel: x\ntrain_mlm:\n  batch_size: 8\n  max_steps: ten\n")
    assert yaml_key_line(path, "train_mlm.max_steps") == 5
    assert yaml_key_line(path, "train_mlm") == 3
    assert yaml_key_line(path, "train_mlm.nope") == 3  # the nearest enclosing key
    assert yaml_key_line(path, "absent") is None


def test_blame_file_adds_file_and_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train_mlm:\n  max_steps: ten\n")
    exc = ConfigError("train_mlm.max_steps: expected an integer, got 'ten'", "train_mlm.max_steps")
    assert str(blame_file(exc, path)) == f"{path}:2: train_mlm.max_steps: expected an integer, got 'ten'"
    flat = tmp_path / "flat.yaml"
    flat.write_text("source: x\nmax_steps: ten\n")
    assert str(blame_file(exc, flat, section="train_mlm")).startswith(f"{flat}:2: ")


# ---- load_config: defaults <- file <- --set ----------------------------------------


def test_load_config_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train_mlm:\n  max_steps: 10\n  batch_size: 8\n")
    config = load_config(ENTRY, str(path), ["train_mlm.max_steps=20"])
    assert config.train_mlm.max_steps == 20
    assert config.train_mlm.batch_size == 8
    assert config.preprocess.source == "builtin:imdb"  # the embedded default
    assert to_dict(load_config(ENTRY))["train_mlm"]["learning_rate"] == 5e-4


def test_unquoted_yaml_no_for_a_choice_means_no(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train_mlm:\n  eval_strategy: no\n  mixed_precision: no\n")
    config = load_config(ENTRY, str(path))
    assert config.train_mlm.eval_strategy == "no" and config.train_mlm.mixed_precision == "no"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            "train_mlm:\n  learnin_rate: 1.0e-4\n",
            ":2: unknown config key train_mlm.learnin_rate; known keys in train_mlm:",
        ),
        ("preprocess:\n  source: x.csv\n  chunk_size: ten\n", ":3: preprocess.chunk_size: expected an integer"),
        ("model: x\npreprocess:\n  test_size: 2\n", ":2: preprocess: test_size must be between 0 and 1"),
        ("colour: red\n", ":1: unknown config key colour; known keys: deploy, evaluate, mask_eval, model"),
    ],
    ids=["unknown-key", "wrong-type", "range", "unknown-section"],
)
def test_load_config_errors_name_file_line_and_key(tmp_path, content, expected):
    path = tmp_path / "run.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_config(ENTRY, str(path))
    assert str(info.value).startswith(f"{path}{expected}")


def test_load_config_set_errors_are_not_blamed_on_the_file(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("train_mlm:\n  max_steps: 10\n")
    with pytest.raises(ConfigError) as info:
        load_config(ENTRY, str(path), ["train_mlm.max_steps=ten"])
    assert str(info.value) == "train_mlm.max_steps: expected an integer, got 'ten'"


def test_from_json_errors():
    assert from_json(PreprocessConfig, "", "preprocess") == PreprocessConfig()
    with pytest.raises(ConfigError, match="^preprocess: not valid JSON"):
        from_json(PreprocessConfig, "{nope", "preprocess")
    with pytest.raises(ConfigError, match="unknown config key preprocess.nope"):
        from_json(PreprocessConfig, '{"nope": 1}', "preprocess")


def test_unknown_pipeline():
    with pytest.raises(
        ConfigError,
        match="unknown pipeline 'mlm-adpat'; available: adapt-then-cls, adapt-then-ner, clm-adapt, cls, mlm-adapt, ner",
    ):
        catalog.get("mlm-adpat")


# ---- preflight: checks `kfnlp run` makes before starting any stage -------------------


@pytest.mark.parametrize(
    ("ref", "fragment"),
    [
        (
            "builtin:nope",
            "model: unknown builtin model builtin:nope; available: builtin:gpt2-imdb, builtin:minilm, builtin:splade-tiny",
        ),
        ("/no/such/model", "model: /no/such/model: no such model directory"),
        ("./relative/model", "model: ./relative/model: no such model directory"),
        ("", "model: empty model reference"),
        ("not a valid id!", "no such directory, and not a valid Hugging Face Hub id"),
        ("some-org/not-cached-model", "not a Hub model in the local Hugging Face cache (HF_HUB_OFFLINE is set)"),
    ],
)
def test_check_model_ref_errors(monkeypatch, ref, fragment):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as info:
        check_model_ref(ref, "model")
    assert fragment in str(info.value)


def test_check_model_ref_accepts_builtin_and_existing_directories(tmp_path):
    check_model_ref("builtin:splade-tiny")
    model = tmp_path / "model"  # an existing model directory; an empty one is refused (test_hostile_input.py)
    shutil.copytree(resolve_model_ref("builtin:splade-tiny"), model)
    check_model_ref(str(model))
    file = tmp_path / "weights.bin"
    file.write_bytes(b"x")
    with pytest.raises(ConfigError, match="expected a model directory, found a file"):
        check_model_ref(str(file))


def test_preflight_names_the_key(tmp_path):
    preflight(load_config(ENTRY))  # the embedded defaults pass
    with pytest.raises(InputError, match=r"^preprocess\.source: .*missing\.csv: no such file or directory"):
        preflight(load_config(ENTRY, overrides=[f"preprocess.source={tmp_path}/missing.csv"]))
    with pytest.raises(ConfigError, match=r"^model: unknown builtin model builtin:bert"):
        preflight(load_config(ENTRY, overrides=["model=builtin:bert"]))


def test_one_config_file_serves_run_and_compile(tmp_path):
    """`kfnlp run --local` ignores the cluster: section that `kfnlp compile` reads."""
    from kfnlp.catalog import load_config
    from kfnlp.launch.cluster.compile import load_configs

    path = tmp_path / "ner.yaml"
    path.write_text("train_ner:\n  num_epochs: 1\ncluster:\n  train:\n    gpus: 2\n", encoding="utf-8")
    entry = catalog.get("ner")
    config = load_config(entry, str(path), ["cluster.train.gpus=4"])
    assert config.train_ner.num_epochs == 1
    compiled_config, cluster = load_configs(entry, str(path), ["cluster.train.gpus=4"])
    assert compiled_config == config and cluster.train.gpus == 4
