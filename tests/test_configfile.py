"""Config loading: defaults < YAML < flags, strict keys and types, one-line errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import pytest
import tyro

from ssmrl import configfile
from ssmrl.configfile import CLI_ONLY, ConfigError


@dataclass(frozen=True)
class Inner:
    width: int = 8
    kind: Literal["a", "b"] = "a"


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    lr: float = 0.1
    flag: bool = False
    limit: int | None = None
    inner: Inner = field(default_factory=Inner)

    def validate(self) -> None:
        if self.inner.width % 2:
            raise ValueError(f"inner.width={self.inner.width} must be even")


@dataclass(frozen=True)
class Run:
    seeds: int = 1

    def validate(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")


@dataclass(frozen=True)
class Command:
    hparams: Annotated[Outer, tyro.conf.arg(name="")] = field(default_factory=Outer)
    run: Annotated[Run, tyro.conf.arg(name="")] = field(default_factory=Run)
    out: Path | None = field(default=None, metadata=CLI_ONLY)


def test_from_dict_sets_nested_values_and_keeps_the_rest():
    cfg = configfile.from_dict(Outer, {"lr": 1, "limit": 3, "inner": {"kind": "b"}})
    assert cfg == Outer(lr=1.0, limit=3, inner=Inner(kind="b"))
    assert isinstance(cfg.lr, float)
    assert configfile.from_dict(Outer, {"lr": "1e-3"}).lr == 1e-3  # YAML 1.1 reads it as str
    assert configfile.from_dict(Outer, None) == Outer()


@pytest.mark.parametrize(
    "data,message",
    [
        ({"nme": "y"}, "f.yaml: unknown key nme (did you mean name?); allowed: flag, inner, limit"),
        ({"inner": {"widht": 2}}, "unknown key inner.widht (did you mean inner.width?)"),
        ({"inner": {"width": "8"}}, "f.yaml: inner.width: expected int, got '8' (str)"),
        ({"inner": {"width": 8.0}}, "inner.width: expected int, got 8.0 (float)"),
        ({"flag": 1}, "flag: expected bool, got 1 (int)"),
        ({"lr": True}, "lr: expected float, got True (bool)"),
        ({"lr": "fast"}, "lr: expected float, got 'fast' (str)"),
        ({"limit": "3"}, "limit: expected int or null, got '3' (str)"),
        ({"inner": {"kind": "c"}}, "inner.kind: expected one of 'a', 'b', got 'c' (str)"),
        ({"inner": 3}, "inner: expected a mapping with keys width, kind, got 3"),
    ],
)
def test_from_dict_errors_are_one_line_and_name_the_key(data, message):
    with pytest.raises(ConfigError) as info:
        configfile.from_dict(Outer, data, source="f.yaml: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_flattened_fields_share_one_level_and_cli_only_fields_stay_out():
    assert configfile.keys(Command) == ["name", "lr", "flag", "limit", "inner", "seeds"]
    cmd = configfile.from_dict(Command, {"seeds": 3, "inner": {"width": 4}})
    assert cmd.run.seeds == 3 and cmd.hparams.inner.width == 4
    with pytest.raises(ConfigError, match="unknown key out"):
        configfile.from_dict(Command, {"out": "x"})
    data = configfile.to_dict(Command(out=Path("x")))
    assert "out" not in data and data["seeds"] == 1 and data["inner"] == {"width": 8, "kind": "a"}
    assert configfile.from_dict(Command, data) == Command()


def test_yaml_round_trip(tmp_path):
    cmd = Command(hparams=Outer(lr=2.5e-4, limit=7, inner=Inner(kind="b")), run=Run(seeds=2))
    path = configfile.write_yaml(cmd, tmp_path / "c.yaml")
    assert configfile.from_dict(Command, configfile.read_yaml(path)) == cmd


def test_precedence_defaults_then_yaml_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.5\nseeds: 4\ninner:\n  width: 6\n")
    cmd = configfile.load(Command, ["--config", str(path), "--inner.width", "10"])
    assert cmd.hparams.lr == 0.5  # YAML over the default
    assert cmd.run.seeds == 4
    assert cmd.hparams.inner.width == 10  # flag over YAML
    assert cmd.hparams.name == "x"  # default kept
    assert configfile.load(Command, [f"--config={path}", "--seeds", "2"]).run.seeds == 2


def test_load_validates_and_runs_checks():
    with pytest.raises(ConfigError, match="^inner.width=3 must be even$"):
        configfile.load(Command, ["--inner.width", "3"])
    with pytest.raises(ConfigError, match="seeds must be >= 1"):
        configfile.load(Command, ["--seeds", "0"])

    def no_y(cmd):
        if cmd.hparams.name == "y":
            raise ValueError("name: 'y' is taken")

    with pytest.raises(ConfigError, match="name: 'y' is taken"):
        configfile.load(Command, ["--name", "y"], checks=[no_y])


@pytest.mark.parametrize(
    "text,message",
    [
        ("inner: [1\n", "invalid YAML at line 2"),
        ("- 1\n- 2\n", "expected a mapping of settings, got list"),
    ],
)
def test_bad_yaml_files(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        configfile.load(Command, ["--config", str(path)])
    with pytest.raises(ConfigError, match="cannot read config file"):
        configfile.load(Command, ["--config", str(tmp_path / "missing.yaml")])
    with pytest.raises(ConfigError, match="--config needs a value"):
        configfile.load(Command, ["--config"])


def test_fail_prints_one_line_and_exits_2(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("inner:\n  depth: 3\n")
    with pytest.raises(SystemExit) as info:
        try:
            configfile.load(Command, ["--config", str(path)])
        except configfile.ConfigError as e:
            configfile.fail(str(e))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("ssmrl: error: ") and "unknown key inner.depth" in err


def test_parse_overrides_nests_dotted_keys_and_reads_values_as_yaml():
    got = configfile.parse_overrides(["core.name=gru", "gamma=0.5", "lr=1e-3", "flag=true"])
    assert got == {"core": {"name": "gru"}, "gamma": 0.5, "lr": "1e-3", "flag": True}
    assert configfile.parse_overrides(["a.b=1", "a.c=[1, 2]"]) == {"a": {"b": 1, "c": [1, 2]}}
    for bad in ("gamma", "=1", "core..name=x", "a=[1"):
        with pytest.raises(configfile.ConfigError, match="override"):
            configfile.parse_overrides([bad])
    with pytest.raises(configfile.ConfigError, match="a value and a mapping"):
        configfile.parse_overrides(["a=1", "a.b=2"])


def test_one_line_reads_tyro_boxes_drawn_with_and_without_box_characters():
    utf8 = """╭─ Unrecognized options ────────────────────────╮
│ Unrecognized options: --num-env, 8            │
│ ───────────────────────────────────────────── │
│ Perhaps you meant:                            │
│     --num-envs INT                            │
│         (default: 64)                         │
│ ───────────────────────────────────────────── │
│ For full helptext, run ssmrl train ppo --help │
╰───────────────────────────────────────────────╯
"""
    ascii_box = """ Unrecognized options
 ------------------------------------
  Unrecognized options: --num-env, 8
  ------------------------------------
  Perhaps you meant:
      --num-envs INT
          (default: 64)
  ------------------------------------
  For full helptext, run ssmrl train ppo --help
"""
    want = (
        "Unrecognized options: --num-env, 8; perhaps you meant --num-envs INT (default: 64); "
        "see `ssmrl train ppo --help`"
    )
    assert configfile.one_line(utf8, "ssmrl train ppo") == want
    assert configfile.one_line(ascii_box, "ssmrl train ppo") == want
