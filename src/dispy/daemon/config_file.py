"""Configuration files of dispynode and dispyscheduler: typed ``key = value`` data, never
evaluated.

The original ``eval``-ed values read back from its configuration files; here a file is
data only. ``--save_config`` writes a small subset of TOML (one ``[dispynode]`` table of
strings, integers, floats, booleans and lists of strings), so any TOML reader reads it
too, and an operator can add comments. A JSON object (flat, or under "dispynode") is
accepted as well. Every value is checked against the type of its option.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from typing import Any

SECTION = "dispynode"

_KEY = re.compile(r"[A-Za-z0-9_-]+")
_NUMBER = re.compile(r"[+-]?(?:\d[\d_]*)(?:\.\d[\d_]*)?(?:[eE][+-]?\d+)?")
_JSON_STRING = json.JSONDecoder()


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message says where and why."""


# ---- writing ----------------------------------------------------------------------


def _value_text(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value_text(key, v) for v in value) + "]"
    raise ConfigError(f"option {key}: cannot save a value of type {type(value).__name__}")


def dumps(values: dict[str, Any], comment: str = "", section: str = SECTION) -> str:
    """The text of a configuration file holding ``values`` (None values are left out)."""
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    lines.append(f"[{section}]")
    for key in sorted(values):
        if values[key] is not None:
            lines.append(f"{key} = {_value_text(key, values[key])}")
    return "\n".join(lines) + "\n"


def save(values: dict[str, Any], path: str | None, comment: str = "",
         section: str = SECTION) -> None:
    """Write ``values`` to ``path``, or to stdout when path is None or '-'."""
    text = dumps(values, comment, section)
    if path in (None, "-"):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


# ---- reading ----------------------------------------------------------------------


def _parse_value(text: str, pos: int) -> tuple[Any, int]:
    """One TOML-subset value starting at ``text[pos]``; returns it and the next position."""
    if pos >= len(text):
        raise ValueError("missing value")
    ch = text[pos]
    if ch == '"':
        try:
            return _JSON_STRING.raw_decode(text, pos)
        except ValueError:
            raise ValueError("unterminated or invalid string") from None
    if ch == "'":
        close = text.find("'", pos + 1)
        if close < 0:
            raise ValueError("unterminated string")
        return text[pos + 1:close], close + 1
    if ch == "[":
        items: list[Any] = []
        pos += 1
        while True:
            while pos < len(text) and text[pos] in " \t":
                pos += 1
            if pos < len(text) and text[pos] == "]":
                return items, pos + 1
            item, pos = _parse_value(text, pos)
            items.append(item)
            while pos < len(text) and text[pos] in " \t":
                pos += 1
            if pos < len(text) and text[pos] == ",":
                pos += 1
            elif pos >= len(text) or text[pos] != "]":
                raise ValueError("list must be [a, b, ...] on one line")
    for word, value in (("true", True), ("false", False)):
        if text.startswith(word, pos):
            return value, pos + len(word)
    match = _NUMBER.match(text, pos)
    if match:
        raw = match.group().replace("_", "")
        number: Any = float(raw) if any(c in raw for c in ".eE") else int(raw)
        return number, match.end()
    raise ValueError(f"cannot read value {text[pos:].strip()!r} (quote strings)")


def _parse_line(line: str) -> tuple[str, Any]:
    match = _KEY.match(line)
    if not match:
        raise ValueError("expected key = value")
    key, pos = match.group(), match.end()
    rest = line[pos:].lstrip()
    if not rest.startswith("="):
        raise ValueError(f"expected '=' after {key}")
    pos = len(line) - len(rest) + 1
    while pos < len(line) and line[pos] in " \t":
        pos += 1
    value, pos = _parse_value(line, pos)
    tail = line[pos:].strip()
    if tail and not tail.startswith("#"):
        raise ValueError(f"unexpected text after the value: {tail!r}")
    return key, value


def parse_text(text: str, section: str = SECTION) -> dict[str, Any]:
    """Raw values of a TOML-subset or JSON configuration (types not yet checked)."""
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"invalid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError("a JSON configuration must be an object")
        if isinstance(data.get(section), dict) and len(data) == 1:
            data = data[section]
        return data
    values: dict[str, Any] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            name = line.split("#", 1)[0].strip()
            if name != f"[{section}]":
                raise ConfigError(f"line {number}: unknown section {name} (only [{section}])")
            continue
        try:
            key, value = _parse_line(line)
        except ValueError as exc:
            raise ConfigError(f"line {number}: {exc}") from None
        if key in values:
            raise ConfigError(f"line {number}: {key} is given twice")
        values[key] = value
    return values


def check(values: dict[str, Any], schema: dict[str, type]) -> dict[str, Any]:
    """Values converted to their option's type; ConfigError for unknown keys or types."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        kind = schema.get(key)
        if kind is None:
            known = ", ".join(sorted(schema))
            raise ConfigError(f"unknown option {key!r} (known: {known})")
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            value = float(value) if ok else value
        elif kind is list:
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        else:  # str; a number is accepted where the option takes text (e.g. a size)
            ok = isinstance(value, (str, int)) and not isinstance(value, bool)
            value = str(value) if ok else value
        if not ok:
            expected = {list: "a list of strings", bool: "true or false"}.get(
                kind, f"a value of type {kind.__name__}")
            raise ConfigError(f"option {key} = {value!r}: expected {expected}")
        out[key] = value
    return out


def load(path: str, schema: dict[str, type], section: str = SECTION) -> dict[str, Any]:
    """Read and check a configuration file; ConfigError names the file on any problem."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return check(parse_text(text, section), schema)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# ---- options of a command -----------------------------------------------------------

#: Options about the configuration file itself; never stored in one.
NOT_STORED = ("config", "save_config", "help")


def schema_of(p: argparse.ArgumentParser) -> dict[str, type]:
    """Option name -> type of its value in a configuration file."""
    schema: dict[str, type] = {}
    for action in p._actions:
        if action.dest in NOT_STORED:
            continue
        if action.nargs == 0:
            kind: type = bool
        elif isinstance(action.default, list):
            kind = list
        else:
            kind = action.type if action.type in (int, float) else str
        schema[action.dest] = kind
    return schema


def given_options(make_parser: Callable[[], argparse.ArgumentParser],
                  argv: list[str] | None) -> set[str]:
    """The options named on the command line (so they win over the file)."""
    probe = make_parser()
    for action in probe._actions:
        action.default = argparse.SUPPRESS
    return set(vars(probe.parse_args(argv)))


def merge_file(make_parser: Callable[[], argparse.ArgumentParser], a: argparse.Namespace,
               argv: list[str] | None, section: str = SECTION) -> None:
    """Fill ``a`` from ``a.config``; options given on the command line win."""
    p = make_parser()
    try:
        values = load(a.config, schema_of(p), section)
    except ConfigError as exc:
        p.error(f"--config {exc}")
    given = given_options(make_parser, argv)
    for key, value in values.items():
        if key not in given:
            setattr(a, key, value)


def save_options(a: argparse.Namespace, p: argparse.ArgumentParser, skip: Callable[[str], bool],
                 prog: str, section: str = SECTION) -> None:
    """``--save_config``: write the options (except those ``skip`` names) and exit."""
    values: dict[str, Any] = {}
    for key, kind in schema_of(p).items():
        if skip(key):
            continue
        value = getattr(a, key)
        values[key] = kind(value) if kind in (int, float) and value is not None else value
    comment = (f"{prog} configuration ({prog} --save_config); use with {prog} --config FILE."
               "\nOptions on the command line win over this file.")
    try:
        save(values, a.save_config, comment, section)
    except OSError as exc:
        sys.exit(f"{prog}: cannot write {a.save_config}: {exc.strerror}")
    if a.save_config != "-":
        print(f"{prog}: configuration saved in {a.save_config}", file=sys.stderr)
    sys.exit(0)
