"""The config system: precedence, type checks, unknown keys, required keys, YAML errors, --help."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest
import yaml

from pipeline import cli
from pipeline.config import REQUIRED, describe, load_config, option, parse_override, save_config, section
from pipeline.errors import ConfigError


@dataclass
class Inner:
    lr: float = option(1e-3, "learning rate")
    steps: int = option(10, "steps")
    kind: Literal["a", "b"] = option("a", "a choice")
    names: list[str] = option(["x"], "some names")
    maybe: str | None = option(None, "optional string")


@dataclass
class Outer:
    output_dir: str = option(REQUIRED, "where to write")
    flag: bool = option(False, "a flag")
    train: Inner = section(Inner, "nested")


def write(tmp_path, data, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_precedence_defaults_yaml_overrides(tmp_path):
    path = write(tmp_path, {"output_dir": "o", "train": {"lr": 0.5, "steps": 3}})
    cfg = load_config(Outer, path, ["train.steps=7", "flag=true"])
    assert cfg.train.lr == 0.5 and cfg.train.steps == 7 and cfg.flag is True
    assert cfg.train.kind == "a" and cfg.train.names == ["x"]


def test_override_parsing():
    assert parse_override("a.b=3e-4") == ("a.b", 3e-4)
    assert parse_override("a=[x, y]") == ("a", ["x", "y"])
    assert parse_override("a=null") == ("a", None)
    assert parse_override("a=none") == ("a", "none")  # a plain string, e.g. model.init_from=none
    assert parse_override("a=__import__('os')") == ("a", "__import__('os')")  # never evaluated
    with pytest.raises(ConfigError, match="key.sub=value"):
        parse_override("novalue")


def test_int_promotes_to_float_and_single_item_to_list(tmp_path):
    cfg = load_config(Outer, None, ["output_dir=o", "train.lr=1", "train.names=z"])
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float) and cfg.train.names == ["z"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["output_dir=o", "train.steps=1.5"], r"train.steps: expected int, got 1.5"),
        (["output_dir=o", "train.steps=abc"], r"train.steps: expected int"),
        (["output_dir=o", "flag=3"], r"flag: expected bool"),
        (["output_dir=o", "train.kind=c"], r"train.kind: 'c' is not one of 'a' \| 'b'"),
        (["output_dir=o", "train.lrr=1"], r"unknown config key 'train.lrr'. Did you mean 'train.lr'"),
        (["output_dir=o", "trian.lr=1"], r"unknown config key 'trian'. Did you mean 'train'"),
        ([], r"missing required config key 'output_dir'"),
        (["output_dir=o", "train=5"], r"train: expected a section"),
    ],
)
def test_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, None, overrides)


def test_malformed_yaml_names_file_and_line(tmp_path):
    path = write(tmp_path, "output_dir: o\ntrain:\n  lr: [1,\n  steps: 2\n")
    with pytest.raises(ConfigError, match=r"malformed YAML in .*c.yaml line \d+"):
        load_config(Outer, path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(Outer, tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Outer, write(tmp_path, "- a\n- b\n", "list.yaml"))


def test_save_config_round_trip(tmp_path):
    cfg = load_config(Outer, None, ["output_dir=o", "train.maybe=hello"])
    save_config(cfg, tmp_path / "out" / "config.yaml")
    assert load_config(Outer, tmp_path / "out" / "config.yaml") == cfg


def test_describe_lists_every_key():
    keys = {row[0]: row for row in describe(Outer)}
    assert set(keys) == {
        "output_dir",
        "flag",
        "train.lr",
        "train.steps",
        "train.kind",
        "train.names",
        "train.maybe",
    }
    assert keys["output_dir"][2] == "REQUIRED" and keys["train.lr"][1] == "float"
    assert keys["train.kind"][3] == "a choice"


@pytest.mark.parametrize("stage", ["tokenizer", "shard", "pretrain", "finetune", "run", "export"])
def test_stage_help_lists_keys(stage, capsys):
    module = cli.stage_module(stage)
    with pytest.raises(SystemExit) as exit_info:
        cli.main([stage, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for key, type_name, _, _ in describe(module.Config):
        assert f"  {key}  ({type_name}" in out


def test_cli_unknown_key_is_one_line_error(tmp_path, capsys):
    code = cli.main(
        ["tokenizer", "input=[a.txt]", f"output_dir={tmp_path}", "vocab_size=100", "vocab_sise=3"]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: unknown config key 'vocab_sise'. Did you mean 'vocab_size'?"]
