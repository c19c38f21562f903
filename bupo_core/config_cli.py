"""Command-line flags generated from configuration dataclasses, so a setting is written once.

A config dataclass documents every field in its docstring (``name: help`` lines, Google style,
continuation lines indented further; ``a, b: help`` documents two fields). :func:`add_config_arguments`
turns each field into a ``--field-name`` flag with that help, its type, its choices (``Literal``)
and its default; :func:`config_from_args` builds the dataclass back from the parsed flags, keeping
the dataclass default for every flag that was not given. Adding a field to ``TrainConfig`` (with its
docstring line) therefore adds the ``bupo train`` flag, its ``--help`` text and its parsing.

Type mapping: ``bool`` -> ``--flag`` / ``--no-flag``; ``int``/``float``/``str`` -> typed value;
``X | None`` -> a value of type X or the word ``none``; ``Literal[...]`` -> ``choices``;
``tuple[float, float]`` -> exactly two values; ``tuple[str, ...]`` and ``list[int]`` -> one or more
values (``--statistics entropy vector_norm``), given back as a tuple or a list. ``dict`` fields
need a dedicated flag (``--task-arg``).

A config may inherit documented fields (:class:`bupo_core.sampling.SamplingFields`): the help of a
field comes from the first class in the MRO whose docstring documents it.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import re
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal, get_args, get_origin

from .errors import InputFormatError


def field_help(cls: type) -> dict[str, str]:
    """``{field: help}`` parsed from the ``name: text`` lines of ``cls``'s docstring.

    >>> from bupo_core.trainer import TrainConfig
    >>> field_help(TrainConfig)["group_size"]
    'G, sampled responses per prompt (paper: 8); must be >= 2.'
    """
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):  # a subclass's line wins
        out.update(_docstring_help(klass.__doc__ or "", names))
    return out


def _docstring_help(doc: str, names: set[str], convert: Any = None) -> dict[str, str]:
    convert = convert or plain_text
    out: dict[str, str] = {}
    current: list[str] = []
    indent = None
    entry = re.compile(r"^(\s*)([A-Za-z_][\w]*(?:\s*,\s*[A-Za-z_][\w]*)*):\s+(.*)$")
    for line in doc.splitlines():
        m = entry.match(line)
        if m and all(n.strip() in names for n in m.group(2).split(",")):
            current = [n.strip() for n in m.group(2).split(",")]
            indent = len(m.group(1))
            for n in current:
                out[n] = convert(m.group(3).strip())
        elif current and line.strip() and indent is not None and len(line) - len(line.lstrip()) > indent:
            for n in current:
                out[n] += " " + convert(line.strip())
        else:
            current, indent = [], None
    return out


def plain_text(text: str) -> str:
    """Docstring markup to terminal text: ``:func:`x``` -> ``x``, double backticks dropped.

    >>> plain_text("see :func:`bupo_core.tasks.load_task` (``chain_sum``)")
    'see bupo_core.tasks.load_task (chain_sum)'
    """
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return text.replace("``", "")


def flag_name(field: str) -> str:
    """``"max_new_tokens"`` -> ``"--max-new-tokens"``."""
    return "--" + field.replace("_", "-")


def _optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def _none_or(conv):
    def parse(text: str):
        return None if text.lower() == "none" else conv(text)

    parse.__name__ = getattr(conv, "__name__", "value")
    return parse


def add_config_arguments(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    *,
    exclude: Iterable[str] = (),
    include: Iterable[str] | None = None,
    flags: dict[str, str] | None = None,
    overrides: dict[str, dict] | None = None,
    defaults: Any = None,
    dest_prefix: str = "",
) -> list[str]:
    """Add one flag per field of ``cls`` (except ``exclude``); return the fields added.

    Args:
        parser: an ``argparse`` parser or argument group.
        cls: the config dataclass (its docstring gives each flag's help).
        exclude: fields without a generated flag (handled by hand, e.g. ``task_kwargs``).
        flags: field -> flag name when it differs from ``--field-name`` (``{"out_dir": "--out"}``).
        overrides: field -> extra ``add_argument`` keywords (``choices``, ``required``, ``help``).
        include: only these fields (default: all but ``exclude``).
        defaults: an instance whose values are shown as defaults (default ``cls()``); pass the
            same instance as ``base`` to :func:`config_from_args`.
        dest_prefix: namespace prefix, so several configs can share one parser (``"eval_"``).

    Flags not given on the command line are absent from the namespace, so
    :func:`config_from_args` keeps the dataclass defaults for them.
    """
    helps = field_help(cls)
    hints = typing.get_type_hints(cls)
    shown = defaults if defaults is not None else cls()
    added = []
    for f in dataclasses.fields(cls):
        if f.name in set(exclude) or not f.init or (include is not None and f.name not in set(include)):
            continue
        tp, optional = _optional(hints[f.name])
        default = getattr(shown, f.name)
        kw: dict[str, Any] = {"dest": dest_prefix + f.name, "default": argparse.SUPPRESS}
        help_text = helps.get(f.name, "")
        if not help_text:
            raise TypeError(f"{cls.__name__}.{f.name} has no docstring line; document it as '{f.name}: ...'")
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif get_origin(tp) is Literal:
            kw["choices"] = list(get_args(tp))
        elif get_origin(tp) in (tuple, list):
            inner = get_args(tp)
            variable = get_origin(tp) is list or (len(inner) == 2 and inner[1] is Ellipsis)
            item = inner[0] if inner else str
            if not variable and len(set(inner)) != 1:
                raise TypeError(f"{cls.__name__}.{f.name}: a fixed tuple needs one item type, got {tp}")
            kw["nargs"] = "+" if variable else len(inner)
            if get_origin(item) is Literal:
                kw["choices"] = list(get_args(item))
                kw["type"] = type(get_args(item)[0])
            elif item in (int, float, str):
                kw["type"] = item
                name = "TEXT" if item is str else item.__name__.upper()
                kw["metavar"] = name if variable else (name,) * len(inner)
            else:
                raise TypeError(
                    f"{cls.__name__}.{f.name}: item type {item} has no generated flag; exclude it and add one by hand"
                )
        elif tp in (int, float, str):
            kw["type"] = _none_or(tp) if optional else tp
            kw["metavar"] = tp.__name__.upper() if tp is not str else "TEXT"
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: type {tp} has no generated flag; exclude it and add one by hand")
        kw["help"] = f"{help_text} (default: {default!r})".replace("%", "%%")
        extra = (overrides or {}).get(f.name, {})
        if "choices" in extra:  # a fixed list of names: show it instead of a metavar, no "none" parsing
            kw.pop("metavar", None)
            kw["type"] = str
        kw.update(extra)
        if "choices" in kw and "metavar" in kw:  # argparse lists choices only in place of a metavar
            kw["help"] += f"; choices: {', '.join(map(str, kw['choices']))}"
        if kw.get("required"):
            kw.pop("default", None)
        parser.add_argument((flags or {}).get(f.name, flag_name(f.name)), **kw)
        added.append(f.name)
    return added


def config_from_args(cls: type, args: argparse.Namespace, *, base: Any = None, dest_prefix: str = "", **extra: Any):
    """The dataclass described by the parsed arguments.

    Only fields whose flags were given are set; the others keep their values in ``base`` (or the
    dataclass defaults). ``extra`` supplies fields parsed by hand (e.g. ``task_kwargs``).
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    given = {
        k[len(dest_prefix) :]: v
        for k, v in vars(args).items()
        if k.startswith(dest_prefix) and k[len(dest_prefix) :] in names
    }
    # argparse gives nargs values as a list: a tuple field gets a tuple
    values = {
        k: tuple(v) if isinstance(v, list) and get_origin(_optional(hints[k])[0]) is tuple else v
        for k, v in given.items()
    }
    values.update(extra)
    return dataclasses.replace(base, **values) if base is not None else cls(**values)


MAX_SEED = 2**63 - 1  # what torch.manual_seed and numpy's default_rng accept (TrainConfig uses the same bound)


def check_seed(value: Any, name: str = "--seed") -> int:
    """Return ``value`` if it is a usable seed (an integer in ``0..2**63 - 1``), else raise naming ``name``.

    >>> check_seed(7)
    7
    >>> check_seed(10**20, "seed")
    Traceback (most recent call last):
    ...
    bupo_core.errors.InputFormatError: seed 100000000000000000000 is out of range: use an integer in 0..9223372036854775807
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise InputFormatError(f"{name} {value!r} is out of range: use an integer in 0..{MAX_SEED}")
    return value


def parse_key_values(items: Iterable[str] | None, flag: str = "--task-arg") -> dict[str, Any]:
    """The one ``KEY=VALUE`` parser: ``["a=1", "b=x", "c=true"]`` -> ``{"a": 1, "b": "x", "c": True}``.

    Values are read as JSON (numbers, ``true``/``false``, ``null``, lists); ``True``/``False`` in
    any case are booleans; anything else stays a string.

    >>> parse_key_values(["max_terms=2", "ratio=0.5", "name=x", "flag=True", "xs=[1, 2]"])
    {'max_terms': 2, 'ratio': 0.5, 'name': 'x', 'flag': True, 'xs': [1, 2]}
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputFormatError(f"{flag} {item!r} is not KEY=VALUE: write key=value, e.g. {flag} max_terms=2")
        if value.strip().lower() in ("true", "false"):
            val: Any = value.strip().lower() == "true"
        else:
            try:
                val = json.loads(value)
            except json.JSONDecodeError:
                val = value
        out[key.strip()] = val
    return out


# ----------------------------------------------------------------------------- documentation tables
def markdown_text(text: str) -> str:
    """Docstring markup to Markdown: ``:func:`~a.b``` and double backticks -> single backticks.

    >>> markdown_text("see :func:`~bupo_core.tasks.load_task` (``chain_sum``), a|b")
    'see `load_task` (`chain_sum`), a\\\\|b'
    """
    text = re.sub(r":[a-z]+:`~[\w.]*\.(\w+)`", r"`\1`", text)
    text = re.sub(r":[a-z]+:`([^`]+)`", r"`\1`", text)
    return text.replace("``", "`").replace("|", "\\|")


def _markdown_default(value: Any) -> str:
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, dict):
        return "`" + ", ".join(f"{k}={v!r}" for k, v in value.items()) + "`" if value else "`{}`"
    if isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
        return ", ".join(f"`{v}`" for v in value)
    return str(value)


def _field_docs(cls: type) -> dict[str, str]:
    """``{field: docstring text}`` with the docstring's markup kept (for Markdown)."""
    names = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        out.update(_docstring_help(klass.__doc__ or "", names, convert=lambda t: t))
    return out


def markdown_table(cls: type, *, exclude: Iterable[str] = ()) -> str:
    """The ``| field | default | meaning |`` table of a config dataclass, from its fields and docstring.

    Fields that share one docstring line (``eps_low, eps_high: ...``) share one row. The tables in
    the docs are written by ``python tools/config_tables.py`` with this function, never by hand.

    >>> from bupo_core.evaluate import EvalConfig
    >>> print(markdown_table(EvalConfig).splitlines()[2])
    | `max_new_tokens` | 32 | response length limit in tokens. |
    """
    docs = _field_docs(cls)
    instance = cls()
    rows: list[tuple[list[str], list[str], str]] = []
    for f in dataclasses.fields(cls):
        if f.name in set(exclude):
            continue
        if f.name not in docs:
            raise TypeError(f"{cls.__name__}.{f.name} has no docstring line; document it as '{f.name}: ...'")
        default = _markdown_default(getattr(instance, f.name))
        if rows and rows[-1][2] == docs[f.name]:  # a shared docstring line: one row
            rows[-1][0].append(f.name)
            rows[-1][1].append(default)
        else:
            rows.append(([f.name], [default], docs[f.name]))
    lines = ["| field | default | meaning |", "|---|---|---|"]
    for names, defaults, text in rows:
        lines.append(f"| {', '.join(f'`{n}`' for n in names)} | {', '.join(defaults)} | {markdown_text(text)} |")
    return "\n".join(lines)


#: the configs whose tables the docs carry: marker name -> ``module:class`` (imported when a table is drawn)
DOCUMENTED_CONFIGS: dict[str, str] = {
    "TrainConfig": "bupo_core.trainer:TrainConfig",
    "EvalConfig": "bupo_core.evaluate:EvalConfig",
    "AnalysisConfig": "bupo_core.analysis:AnalysisConfig",
}
_BLOCK = re.compile(r"(<!-- BEGIN generated: (\w+) -->\n)(.*?)(<!-- END generated: \2 -->)", re.S)


def fill_generated_blocks(text: str, where: str = "text") -> str:
    """``text`` with every ``<!-- BEGIN generated: NAME -->`` ... ``<!-- END generated: NAME -->``
    block replaced by the current table of the config ``NAME`` (see :data:`DOCUMENTED_CONFIGS`).

    >>> out = fill_generated_blocks("<!-- BEGIN generated: EvalConfig -->\\nold\\n<!-- END generated: EvalConfig -->")
    >>> out.splitlines()[1]
    '| field | default | meaning |'
    """

    def table(m: re.Match) -> str:
        name = m.group(2)
        if name not in DOCUMENTED_CONFIGS:
            raise InputFormatError(
                f"{where}: no config named {name!r} for a generated table; known: {sorted(DOCUMENTED_CONFIGS)}"
            )
        module, attr = DOCUMENTED_CONFIGS[name].split(":")
        cls = getattr(importlib.import_module(module), attr)
        return f"{m.group(1)}{markdown_table(cls)}\n{m.group(4)}"

    return _BLOCK.sub(table, text)
