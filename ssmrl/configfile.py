"""Frozen dataclass configs from code defaults < a YAML file < command-line flags.

```python
cfg = configfile.load(Config, ["--config", "configs/x.yaml", "--num-envs", "32"])
```

YAML keys mirror the flags: nested dataclasses are nested mappings (``optim: {lr: 1e-3}``
is ``--optim.lr 1e-3``), and a field annotated ``tyro.conf.arg(name="")`` has its fields
at its parent's level in both. Fields whose metadata holds ``CLI_ONLY`` are flags only.
Every mistake becomes a `ConfigError` whose message is one line naming the key and the
allowed keys, values or type; `fail` prints one and exits with status 2. Nothing
here touches JAX.

What tyro does, it does here: flags, their types, ``--help`` (field docstrings become
the help text) and the generic ``Settings[Config[S5Options]]`` types are all tyro's
(`load`). What is hand-written is the YAML side, `from_dict` / `to_dict`: tyro reads no
hand-written YAML (``tyro.extras.from_yaml`` only reads its own tagged dumps, and is
deprecated), and the YAML files must be merged over a base instance (defaults < file <
flags), be strict (unknown keys and wrong types stop the run), follow tyro's naming
(flattened ``arg(name="")`` fields, generic parameters) and fail in one line that names
the key. General converters (dacite, pydantic) check types but know none of tyro's
naming and report errors as multi-line exceptions, so adapting them would cost about
as much as the small type walk below (bool, int, float, str, paths, enums, literals,
unions, tuples, nested dataclasses).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import enum
import io
import os
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal, NoReturn, TypeVar, Union

import tyro
import yaml

T = TypeVar("T")

CLI_ONLY = {"yaml": False}
"""Field metadata for settings given by flags only (never read from or written to YAML)."""


class ConfigError(ValueError):
    """An invalid setting; the message is one line that names the key."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def _strip(tp: Any) -> tuple[Any, tuple]:
    """``(type, metadata)`` of a possibly ``Annotated`` type."""
    if typing.get_origin(tp) is Annotated:
        base, *meta = typing.get_args(tp)
        return base, tuple(meta)
    return tp, ()


def _flattened(tp: Any) -> bool:
    """True for a field annotated with tyro's ``arg(name="")``: its fields join the parent's."""
    return any(
        type(m).__module__.startswith("tyro") and getattr(m, "name", None) == ""
        for m in _strip(tp)[1]
    )


def _resolve(cls: Any) -> tuple[type, dict[str, Any]]:
    """The dataclass behind ``cls`` (maybe a generic alias) and its field types."""
    origin = typing.get_origin(cls) or cls
    hints = typing.get_type_hints(origin, include_extras=True)
    if origin is not cls:
        subst = dict(zip(origin.__parameters__, typing.get_args(cls), strict=True))
        for name, tp in hints.items():
            base, meta = _strip(tp)
            if base in subst:
                hints[name] = Annotated[(subst[base], *meta)] if meta else subst[base]
    return origin, hints


def _is_dataclass_type(tp: Any) -> bool:
    origin = typing.get_origin(tp) or tp
    return isinstance(origin, type) and dataclasses.is_dataclass(origin)


def _yaml_fields(cls: Any) -> Iterable[tuple[dataclasses.Field, Any, bool]]:
    """``(field, type, flattened)`` for every field a YAML file may set."""
    origin, hints = _resolve(cls)
    for f in dataclasses.fields(origin):
        if f.init and f.metadata.get("yaml", True):
            yield f, hints[f.name], _flattened(hints[f.name])


def keys(cls: Any) -> list[str]:
    """The top-level YAML keys of ``cls``."""
    out = []
    for f, tp, flat in _yaml_fields(cls):
        out += keys(_strip(tp)[0]) if flat else [f.name]
    return out


def _type_name(tp: Any) -> str:
    tp, _ = _strip(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin in (tuple, list):
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.name) for m in tp)
    if isinstance(tp, type) and issubclass(tp, PurePath):
        return "a path"
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, current: Any, key: str, source: str) -> Any:
    """``value`` checked against (and converted to) type ``tp``."""
    tp, _ = _strip(tp)

    def wrong() -> ConfigError:
        got = f"{value!r} ({type(value).__name__})"
        return ConfigError(f"{source}{key}: expected {_type_name(tp)}, got {got}")

    if _is_dataclass_type(tp):
        if not isinstance(value, Mapping):
            allowed = ", ".join(keys(tp))
            raise ConfigError(
                f"{source}{key}: expected a mapping with keys {allowed}, got {value!r}"
            )
        base = current if dataclasses.is_dataclass(current) else None
        return from_dict(tp, value, base=base, prefix=f"{key}.", source=source)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if any(value == a and type(value) is type(a) for a in args):
            return value
        raise wrong()
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, current, key, source)
            except ConfigError:
                continue
        raise wrong()
    if tp is Any or isinstance(tp, TypeVar):
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise wrong()
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise wrong()
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise wrong()
    if tp is str:
        if isinstance(value, str):
            return value
        raise wrong()
    if isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, str):
            return tp(value)
        raise wrong()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, str) and value in tp.__members__:
            return tp[value]
        raise wrong()
    if origin in (tuple, list):
        if not isinstance(value, list | tuple):
            raise wrong()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise wrong()
            items = [
                _convert(a, v, None, f"{key}[{i}]", source)
                for i, (a, v) in enumerate(zip(args, value, strict=True))
            ]
        else:
            item = args[0] if args else Any
            items = [_convert(item, v, None, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return origin(items)
    return value


def from_dict(
    cls: type[T] | Any,
    data: Mapping[str, Any] | None,
    *,
    base: T | None = None,
    prefix: str = "",
    source: str = "",
) -> T:
    """``base`` (default ``cls()``) with the settings in ``data``, checked strictly.

    Raises `ConfigError` for unknown keys at any level, wrong types and literal values
    outside their choices. ``source`` (e.g. ``"x.yaml: "``) starts every message.
    """
    origin, _ = _resolve(cls)
    base = origin() if base is None else base
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}expected a mapping of settings, got {data!r}")
    fields = list(_yaml_fields(cls))
    direct = {f.name: (f, tp) for f, tp, flat in fields if not flat}
    flat = {f.name: (tp, set(keys(_strip(tp)[0]))) for f, tp, is_flat in fields if is_flat}
    allowed = sorted(set(direct).union(*(k for _, k in flat.values())))
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            raise ConfigError(
                f"{source}unknown key {prefix}{key}{hint}; allowed: {', '.join(allowed)}"
            )
    changes = {}
    for key, value in data.items():
        if key in direct:
            f, tp = direct[key]
            changes[f.name] = _convert(tp, value, getattr(base, f.name), prefix + key, source)
    for name, (tp, sub_keys) in flat.items():
        sub = {k: v for k, v in data.items() if k in sub_keys}
        if sub:
            changes[name] = from_dict(
                _strip(tp)[0], sub, base=getattr(base, name), prefix=prefix, source=source
            )
    return dataclasses.replace(base, **changes)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_dict(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """The YAML-settable fields of a dataclass as nested plain dicts (inverse of `from_dict`)."""
    out: dict[str, Any] = {}
    for f, _, flat in _yaml_fields(type(cfg)):
        value = getattr(cfg, f.name)
        if flat:
            out.update(to_dict(value))
        else:
            out[f.name] = _plain(value)
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML file ({} when empty); problems raise a one-line `ConfigError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    return data


def write_yaml(cfg: Any, path: str | Path) -> Path:
    """Write a dataclass (via `to_dict`) or a mapping as YAML, keys in field order."""
    data = cfg if isinstance(cfg, Mapping) else to_dict(cfg)
    path = Path(path)
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False), encoding="utf-8")
    return path


def pop_option(args: Sequence[str], flag: str) -> tuple[str | None, list[str]]:
    """``(value, remaining args)`` for ``flag VALUE`` or ``flag=VALUE`` (the last one wins)."""
    value, rest, args = None, [], list(args)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == flag:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(f"{flag} needs a value")
            value, i = args[i + 1], i + 2
            continue
        if arg.startswith(flag + "="):
            value = arg[len(flag) + 1 :]
        else:
            rest.append(arg)
        i += 1
    return value, rest


def validate(cfg: Any, prefix: str = "") -> None:
    """Call ``validate()`` on every nested dataclass (innermost first); errors name the key."""
    for f, _, flat in _yaml_fields(type(cfg)):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate(value, prefix if flat else f"{prefix}{f.name}.")
    check = getattr(cfg, "validate", None)
    if callable(check):
        try:
            check()
        except ConfigError:
            raise
        except ValueError as e:
            where = f"{prefix[:-1]}: " if prefix else ""
            raise ConfigError(f"{where}{e}") from None


def load(
    cls: type[T] | Any,
    args: Sequence[str],
    *,
    default: T | None = None,
    prog: str | None = None,
    description: str | None = None,
    checks: Sequence[Callable[[T], None]] = (),
) -> T:
    """Parse ``args`` into ``cls``: ``default`` (or ``cls()``) < YAML < flags, then validate.

    The YAML file is ``--config FILE`` from ``args``, if given. Flags are
    parsed by tyro (which exits with status 2 on bad flags, and prints ``--help``). Then
    each of ``checks`` runs, and every nested ``validate()``; any problem raises
    `ConfigError`.
    """
    path, rest = pop_option(args, "--config")
    base = (typing.get_origin(cls) or cls)() if default is None else default
    if path is not None:
        base = from_dict(cls, read_yaml(path), base=base, source=f"{path}: ")
    cfg = tyro_cli(cls, default=base, args=rest, prog=prog, description=description)
    for check in checks:
        try:
            check(cfg)
        except ConfigError:
            raise
        except ValueError as e:
            raise ConfigError(str(e)) from None
    validate(cfg)
    return cfg


def one_line(box: str, prog: str | None = None) -> str:
    """tyro's boxed error message as one line, keeping its suggestion and the argument's
    help: ``Unrecognized options: --num-env, 8; perhaps you meant --num-envs INT``."""
    lines = [raw.strip().strip("│|").strip() for raw in box.splitlines()]
    titled = any(line.startswith("╭") for line in lines)  # the title is in the top border
    lines = [line for line in lines if line and line[:1] not in ("╭", "╰")]
    separator = [set(line) <= {"─", "-"} for line in lines]
    if not titled and len(lines) > 1 and separator[1] and not separator[0]:
        lines, separator = lines[2:], separator[2:]
    sections: list[list[str]] = [[]]
    for line, is_separator in zip(lines, separator, strict=True):
        if is_separator:
            sections.append([])
        else:
            sections[-1].append(line)
    parts = []
    for lines in sections:
        text = " ".join(lines)
        if not text or text.startswith("For full helptext"):
            continue
        for head, lead in (("Perhaps you meant:", "perhaps you meant"), ("Argument helptext:", "")):
            if text.startswith(head):
                text = f"{lead} {text[len(head) :].strip()}".strip()
        parts.append(text)
    if prog:
        parts.append(f"see `{prog} --help`")
    return "; ".join(parts) or "invalid arguments"


class _Captured(io.StringIO):
    """A UTF-8, non-terminal stream, so that rich draws tyro's box the same everywhere."""

    encoding = "utf-8"

    def isatty(self) -> bool:
        return False


def tyro_cli(cls: Any, **kwargs: Any) -> Any:
    """`tyro.cli`, whose errors (a box on stderr and exit 2) become a one-line `ConfigError`;
    ``--help`` prints as usual."""
    captured = _Captured()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(cls, **kwargs)
    except SystemExit as e:
        if e.code in (0, None):
            sys.stderr.write(captured.getvalue())
            raise
    # Parse again, wide enough that rich neither wraps nor crops the message.
    wide, columns = _Captured(), os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "1000"
    try:
        with contextlib.redirect_stderr(wide), contextlib.suppress(SystemExit):
            tyro.cli(cls, **kwargs)
    finally:
        if columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = columns
    raise ConfigError(one_line(wide.getvalue(), kwargs.get("prog")))


def fail(message: str, prog: str = "ssmrl") -> NoReturn:
    """Print ``prog: error: message`` to stderr and exit with status 2."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(2)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["core.name=gru", "gamma=0.5"]`` -> ``{"core": {"name": "gru"}, "gamma": 0.5}``.

    Each value is read as YAML (``1e-3``, ``true``, ``[1, 2]``), so the overrides take
    the same keys, types and checks as a YAML file (`from_dict`).
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. core.name=gru")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: the value is not valid YAML") from None
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part} is set to a value and a mapping")
        node[leaf] = value
    return out


def flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"core": {"name": "s5"}}`` -> ``{"core.name": "s5"}``."""
    if not isinstance(data, Mapping):
        return {prefix[:-1]: data}
    out = {}
    for k, v in data.items():
        out.update(flat(v, f"{prefix}{k}."))
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal, counting two float NaNs as equal (a saved ``.nan`` is the same setting)."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    return a == b


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """The dotted keys whose values differ between two nested mappings, sorted."""
    a, b = flat(before), flat(after)
    return sorted(k for k in a.keys() | b.keys() if not _same(a.get(k), b.get(k)))
