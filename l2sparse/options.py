"""Configuration as data: each command's options are the fields of its config dataclass, declared once.

A field declared with [`option`][l2sparse.options.option] carries its help text;
[`parser_for`][l2sparse.options.parser_for] turns a config class into the command's parser (option
``--data-root`` for field ``data_root``, the type from the annotation), and [`parse`][l2sparse.options.parse]
reads the command line, after an optional ``--config run.yaml`` whose keys are the same options, into an instance.
The shared fields (data, model, device) live in [`DataOptions`][l2sparse.options.DataOptions], which every
command's config extends.

Why written here rather than taken from jsonargparse or tyro (both measured on ``AdaptConfig``): jsonargparse names
options ``--data_root`` (it has no dash-case mode; its issue 301 asks for one) and takes ``--amp true``, so every
documented command line would change; tyro keeps the kebab-case names but takes lists space-separated
(``--inits a b``, today ``--inits a,b``) and prints a parse error as a multi-line panel, where every command here
answers bad input with one line and exit code 2. What remains is a mapping from annotations to ``argparse``
actions, about sixty lines.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from l2sparse.cli import ArgumentParser
from l2sparse.distributed import DEFAULT_TIMEOUT_S
from l2sparse.errors import ConfigError

MISSING = dataclasses.MISSING


def option(
    default: Any = MISSING,
    help: str | None = None,
    *,
    factory: Callable[[], Any] | None = None,
    flag: str | None = None,
    repeat: bool = False,
    metavar: str | None = None,
    cli: bool = True,
) -> Any:
    """A config field that is also a command-line option.

    Args:
        default: the default value (or ``factory`` for a mutable one).
        help: the option's help; a field that redeclares a base-class field with a new default may omit it.
        flag: for a ``bool`` field that defaults to True, the flag that turns it off (``--fixed-lambda``).
        repeat: a ``list`` given by repeating the option (``--tasks-dir a --tasks-dir b``) instead of ``a,b``.
        cli: False for a field set only from Python (no option).
    """
    meta = {"help": help, "flag": flag, "repeat": repeat, "metavar": metavar, "cli": cli}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass
class DataOptions:
    """The options every command shares: which data, which model, where to run."""

    dataset: str = option("synthetic", "dataset name")
    split: str | None = option("synthetic-default", "split whose seen tasks are trained")
    data_root: str | None = option(None, "dataset folder (real datasets only)")
    tasks_dir: list[str] | None = option(None, "extra folder of task files (repeatable)", repeat=True)
    model: str = option("tiny", "registered model name")
    image_size: int = option(32, "square image side")
    train_size: int = option(500, "training images")
    device: str = option("auto", "auto, cpu or cuda")

    def shared(self) -> dict[str, Any]:
        """The values of the options declared here: what one command hands on to another's config."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(DataOptions)}


def _help_of(cls: type, name: str) -> str:
    """A field's help text, from the nearest class in the MRO that gives one."""
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata.get("help"):
            return f.metadata["help"]
    raise TypeError(f"{cls.__name__}.{name}: an option needs help text (option(..., help=...))")


def _unwrap(hint: Any) -> Any:
    """``X | None`` -> ``X``."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0]
    return hint


def _comma_list(item: type) -> Callable[[str], list]:
    def parse_list(text: str) -> list:
        try:
            return [item(v) for v in text.split(",")]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {item.__name__} values, got {text!r}") from None

    return parse_list


def _pair(text: str) -> tuple[str, str]:
    if text.count("=") != 1:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=")
    return key, value


def _shown(default: Any) -> str | None:
    if default is None or isinstance(default, bool) or default == {}:
        return None
    return ",".join(map(str, default)) if isinstance(default, list) else str(default)


def fields_of(cls: type) -> list[dataclasses.Field]:
    """The fields of config class ``cls`` that are command-line options, in declaration order."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True)]


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one option per field of config class ``cls`` to ``parser`` (dest = field name)."""
    hints = typing.get_type_hints(cls)
    for f in fields_of(cls):
        hint, meta = hints[f.name], f.metadata
        kind = _unwrap(hint)
        origin = typing.get_origin(kind)
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        text = _help_of(cls, f.name)
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"dest": f.name, "default": default}
        if kind is bool:
            kw["action"] = "store_false" if default else "store_true"
        elif origin is dict:
            kw.update(action="append", type=_pair, default=None, metavar=meta.get("metavar") or "KEY=VALUE")
        elif origin is list and meta.get("repeat"):
            kw.update(action="append", type=typing.get_args(kind)[0], default=None)
        elif origin is list:
            item = typing.get_args(kind)[0]
            kw.update(type=_comma_list(item), metavar=meta.get("metavar") or f"{item.__name__.upper()},...")
        else:
            kw["type"] = kind
        shown = _shown(default)
        kw["help"] = text if shown is None or "default:" in text else f"{text} (default: {shown})"
        parser.add_argument(flag, **kw)


def _from_yaml(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """The options in YAML file ``path`` (keys: option names, ``image-size`` or ``image_size``) as parser
    defaults, converted and checked like command-line values."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"config: cannot read {path} as YAML ({' '.join(str(e).split())})") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path}: expected a mapping of option: value, got {type(data).__name__}")
    actions = {
        o.removeprefix("--"): a
        for a in parser._actions
        for o in a.option_strings
        if o.startswith("--") and o not in ("--help", "--config")
    }
    values = {}
    for key, value in data.items():
        action = actions.get(str(key).replace("_", "-"))
        if action is None:
            raise ConfigError(f"config: {path}: unknown option {key!r}; options: {', '.join(sorted(actions))}")
        values[action.dest] = _convert(action, value, f"config: {path}: {key}")
    return values


def _convert(action: argparse.Action, value: Any, where: str) -> Any:
    """A YAML value for ``action``, converted the way the command line would convert its text."""
    if action.nargs == 0:  # store_true / store_false
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    if value is None:
        return None
    if isinstance(action, argparse._AppendAction):
        items = value if isinstance(value, list) else [value]
        if action.type is _pair and isinstance(value, dict):
            items = [f"{k}={v}" for k, v in value.items()]
        return [_typed(action, str(v), where) for v in items]
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return _typed(action, str(value), where)


def _typed(action: argparse.Action, text: str, where: str) -> Any:
    try:
        return action.type(text) if action.type else text
    except (ValueError, TypeError, argparse.ArgumentTypeError) as e:
        raise ConfigError(f"{where}: {e}") from None


def parse(parser: argparse.ArgumentParser, cls: type, argv: Sequence[str] | None) -> tuple[Any, argparse.Namespace]:
    """Parse ``argv`` (after the options of ``--config FILE``, which the command line overrides) into an instance
    of config class ``cls`` and the namespace of every option (the command's own, such as ``--out``, included).

    The file's keys are option names (``image-size`` or ``image_size``; a flag by its own name, ``no-vectorise:
    true``). A repeatable option given on the command line replaces the file's list; a flag the file sets cannot be
    unset on the command line, since a flag has no opposite option.

    Raises:
        ConfigError: an unreadable config file, an unknown key in it or a value of the wrong type.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, rest = pre.parse_known_args(argv)
    if known.config is not None:
        try:
            defaults = _from_yaml(parser, known.config)
        except ConfigError as e:
            parser.error(str(e))
        given = {word.split("=")[0] for word in rest if word.startswith("--")}
        for action in parser._actions:
            if action.dest not in defaults:
                continue
            action.required = False
            if isinstance(action, argparse._AppendAction) and given & set(action.option_strings):
                del defaults[action.dest]  # a repeatable option on the command line replaces the file's list
        parser.set_defaults(**defaults)
    args = parser.parse_args(argv)
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields_of(cls):
        value = getattr(args, f.name)
        if value is None and f.default_factory is not MISSING:
            value = f.default_factory()
        if typing.get_origin(_unwrap(hints[f.name])) is dict and isinstance(value, list):
            value = dict(value)  # the (key, value) pairs of a repeatable KEY=VALUE option
        values[f.name] = value
    return cls(**values), args


def parser_for(
    cls: type, prog: str, description: str, *, out: str | None = None, resume: bool = False, launched: bool = False
) -> ArgumentParser:
    """The parser of a command whose options are the fields of ``cls``, plus ``--config FILE`` and the options of a
    run: ``--out`` (required when ``out`` is None, else its default), ``--quiet``, ``--resume`` with ``resume``,
    ``--dist-timeout`` for a command that runs under ``torchrun`` (``launched``)."""
    parser = ArgumentParser(prog=prog, description=description)
    add_options(parser, cls)
    add = parser.add_argument
    add("--config", metavar="FILE", help="YAML file of option: value pairs; options on the command line override it")
    if out is None:
        add("--out", required=True, help="output folder")
    else:
        add("--out", default=out, help="output folder (default: %(default)s)")
    if resume:
        add("--resume", action="store_true", help="continue the run saved in --out")
    add("--quiet", action="store_true", help="no progress bars")
    if launched:
        add(
            "--dist-timeout",
            type=float,
            default=DEFAULT_TIMEOUT_S,
            help="under torchrun: seconds a collective waits for the other ranks (default: %(default)s)",
        )
    return parser
