"""The small expression language of ``when:``, ``retryPolicy.expression``
and ``{{ ... }}`` templates: parsed once, evaluated without ``eval``.

Grammar (lowest precedence first)::

    expr    := or
    or      := and (("or" | "||") and)*
    and     := not (("and" | "&&") not)*
    not     := ("not" | "!") not | compare
    compare := pipe (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") pipe)?
    pipe    := primary ("|" NAME ("(" NAME ")")?)*
    primary := NUMBER | STRING | true | false | null | "[" (expr ("," expr)*)? "]"
             | "(" expr ")" | path
    path    := NAME ("." NAME)*          names may contain "-": job names are DNS labels

There is no arithmetic (so ``-`` can sit inside names) and no calls but the
filters after ``|``: ``max``, ``min``, ``len``, ``argmax``, ``argmin``. A
path is looked up by the caller's resolver: ``jobs.train.outputs.loss``,
``jobs.train.phase``, ``item.lr``, ``exitCode``...
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

MAX_EXPRESSION = 4096  # characters: expressions sit in a manifest, not in files
MAX_DEPTH = 32  # nesting of brackets and operators


class ExprError(ValueError):
    """A syntax error (at parse time) or a type error (at evaluation)."""


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Path:
    parts: tuple[str, ...]

    def __str__(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class ListOf:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Compare:
    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Filter:
    name: str
    operand: Node
    key: str | None = None  # argmax(accuracy): the output compared


Node = Literal | Path | ListOf | Not | BoolOp | Compare | Filter

FILTERS = frozenset({"max", "min", "len", "argmax", "argmin"})
_KEYED = frozenset({"argmax", "argmin"})
_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
    | (?P<op>==|!=|<=|>=|&&|\|\||[<>!|.,()\[\]])
    | (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
    )""",
    re.VERBOSE,
)
_WORDS = {"true": True, "false": False, "null": None}


def _tokens(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    at = 0
    text = text.rstrip()
    while at < len(text):
        match = _TOKEN.match(text, at)
        if match is None or match.end() == at:
            raise ExprError(f"unexpected {text[at:].strip()[:20]!r} at column {at + 1}")
        kind = match.lastgroup
        assert kind is not None
        found.append((kind, match.group(kind)))
        at = match.end()
    return found


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0
        self.depth = 0

    def peek(self, value: str | None = None, kind: str | None = None) -> bool:
        if self.at >= len(self.tokens):
            return False
        k, v = self.tokens[self.at]
        return (value is None or v == value) and (kind is None or k == kind)

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        if not self.peek(value, kind):
            got = self.tokens[self.at][1] if self.at < len(self.tokens) else "the end"
            raise ExprError(f"expected {value or kind}, got {got!r} in {self.text!r}")
        self.at += 1
        return self.tokens[self.at - 1][1]

    def parse(self) -> Node:
        if not self.tokens:
            raise ExprError("empty expression")
        node = self.expr()
        if self.at < len(self.tokens):
            raise ExprError(f"unexpected {self.tokens[self.at][1]!r} in {self.text!r}")
        return node

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"expression nested deeper than {MAX_DEPTH}")
        try:
            return self.either()
        finally:
            self.depth -= 1

    def either(self) -> Node:
        operands = [self.both()]
        while self.peek("or") or self.peek("||"):
            self.at += 1
            operands.append(self.both())
        return operands[0] if len(operands) == 1 else BoolOp("or", tuple(operands))

    def both(self) -> Node:
        operands = [self.negation()]
        while self.peek("and") or self.peek("&&"):
            self.at += 1
            operands.append(self.negation())
        return operands[0] if len(operands) == 1 else BoolOp("and", tuple(operands))

    def negation(self) -> Node:
        if self.peek("not", "name") or self.peek("!"):
            self.at += 1
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ExprError(f"expression nested deeper than {MAX_DEPTH}")
            try:
                return Not(self.negation())
            finally:
                self.depth -= 1
        return self.compare()

    def compare(self) -> Node:
        left = self.pipe()
        for op in ("==", "!=", "<=", ">=", "<", ">"):
            if self.peek(op, "op"):
                self.at += 1
                return Compare(op, left, self.pipe())
        if self.peek("in", "name"):
            self.at += 1
            return Compare("in", left, self.pipe())
        if (
            self.peek("not", "name")
            and self.at + 1 < len(self.tokens)
            and self.tokens[self.at + 1] == ("name", "in")
        ):
            self.at += 2
            return Compare("not in", left, self.pipe())
        return left

    def pipe(self) -> Node:
        node = self.primary()
        while self.peek("|", "op"):
            self.at += 1
            name = self.take(kind="name")
            if name not in FILTERS:
                raise ExprError(f"unknown filter {name!r} (known: {', '.join(sorted(FILTERS))})")
            key = None
            if self.peek("("):
                self.at += 1
                key = self.take(kind="name")
                self.take(")")
            if name not in _KEYED and key is not None:
                raise ExprError(f"filter {name!r} takes no argument")
            node = Filter(name, node, key)
        return node

    def primary(self) -> Node:
        if self.at >= len(self.tokens):
            raise ExprError(f"expression ends early: {self.text!r}")
        kind, value = self.tokens[self.at]
        self.at += 1
        if kind == "number":
            number = float(value)
            return Literal(int(number) if re.fullmatch(r"-?\d+", value) else number)
        if kind == "string":
            return Literal(_unquote(value))
        if value == "(":
            node = self.expr()
            self.take(")")
            return node
        if value == "[":
            items: list[Node] = []
            if not self.peek("]"):
                items.append(self.expr())
                while self.peek(","):
                    self.at += 1
                    items.append(self.expr())
            self.take("]")
            return ListOf(tuple(items))
        if kind == "name":
            if value in _WORDS:
                return Literal(_WORDS[value])
            parts = [value]
            while self.peek(".", "op"):
                self.at += 1
                parts.append(self.take(kind="name"))
            return Path(tuple(parts))
        raise ExprError(f"unexpected {value!r} in {self.text!r}")


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", lambda m: m.group(1), body)


@lru_cache(maxsize=4096)
def parse(text: str) -> Node:
    """The expression's tree; raises ExprError saying what is wrong."""
    if len(text) > MAX_EXPRESSION:
        raise ExprError(f"expression longer than {MAX_EXPRESSION} characters")
    return _Parser(text).parse()


def children(node: Node) -> tuple[Node, ...]:
    """The nodes directly below ``node``."""
    if isinstance(node, ListOf):
        return node.items
    if isinstance(node, BoolOp):
        return node.operands
    if isinstance(node, Compare):
        return (node.left, node.right)
    if isinstance(node, Not | Filter):
        return (node.operand,)
    return ()


def paths(node: Node) -> Iterator[Path]:
    """Every path the expression reads, with the filter keys as paths beside
    their operand (``jobs.t.outputs.a | argmax(b)`` reads ``jobs.t.outputs.b``)."""
    if isinstance(node, Path):
        yield node
    for child in children(node):
        yield from paths(child)
    if isinstance(node, Filter) and node.key is not None and isinstance(node.operand, Path):
        yield Path((*node.operand.parts[:-1], node.key))


def filters(node: Node) -> Iterator[Filter]:
    if isinstance(node, Filter):
        yield node
    for child in children(node):
        yield from filters(child)


@dataclass(frozen=True)
class Members:
    """The values of one path over a sweep's members, in the sweep's order."""

    names: tuple[str, ...]
    values: tuple[Any, ...]


Resolver = Callable[[Path], Any]


def evaluate(node: Node, resolve: Resolver) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Path):
        return resolve(node)
    if isinstance(node, ListOf):
        return [_plain(evaluate(item, resolve)) for item in node.items]
    if isinstance(node, Not):
        return not truthy(evaluate(node.operand, resolve))
    if isinstance(node, BoolOp):
        if node.op == "and":
            return all(truthy(evaluate(o, resolve)) for o in node.operands)
        return any(truthy(evaluate(o, resolve)) for o in node.operands)
    if isinstance(node, Compare):
        return _compare(
            node.op, _plain(evaluate(node.left, resolve)), _plain(evaluate(node.right, resolve))
        )
    return _filter(node, resolve)


def _plain(value: Any) -> Any:
    return list(value.values) if isinstance(value, Members) else value


def truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return bool(value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if op in ("in", "not in"):
        if not isinstance(right, list | str | dict):
            raise ExprError(f"'{op}' needs a list or a string on its right, got {show(right)}")
        if isinstance(right, str) and not isinstance(left, str):
            raise ExprError(f"'{op}' a string needs a string on its left, got {show(left)}")
        found = left in right
        return found if op == "in" else not found
    if not (
        (_number(left) and _number(right)) or (isinstance(left, str) and isinstance(right, str))
    ):
        raise ExprError(f"cannot compare {show(left)} {op} {show(right)}")
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


def _best(values: Sequence[Any], highest: bool, what: str) -> int:
    """Index of the highest (lowest) number; the first on a tie."""
    numbers = [v for v in values if _number(v) and not math.isnan(v)]
    if not numbers:
        raise ExprError(f"{what}: no numbers to compare")
    if len(numbers) != len(values):
        bad = next(v for v in values if not (_number(v) and not math.isnan(v)))
        raise ExprError(f"{what}: {show(bad)} is not a number")
    pick = max(numbers) if highest else min(numbers)
    return list(values).index(pick)


def _filter(node: Filter, resolve: Resolver) -> Any:
    value = evaluate(node.operand, resolve)
    name = node.name
    if name in _KEYED:
        if not isinstance(value, Members):
            raise ExprError(f"{name} works on the outputs of a sweep, not on {show(value)}")
        if node.key is None:  # argmax alone: the name of the best member
            return value.names[_best(value.values, name == "argmax", name)]
        assert isinstance(node.operand, Path)
        keys = resolve(Path((*node.operand.parts[:-1], node.key)))
        if not isinstance(keys, Members):
            raise ExprError(f"{name}({node.key}) works on the outputs of a sweep")
        return value.values[_best(keys.values, name == "argmax", f"{name}({node.key})")]
    values = _plain(value)
    if name == "len":
        if not isinstance(values, list | str | dict):
            raise ExprError(f"len of {show(values)}")
        return len(values)
    if not isinstance(values, list):
        raise ExprError(f"{name} needs a list, got {show(values)}")
    return values[_best(values, name == "max", name)]


def show(value: Any) -> str:
    text = json.dumps(_plain(value), default=str)
    return text if len(text) <= 60 else text[:57] + "..."


# --- templates -----------------------------------------------------------

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)


def templates(text: str) -> list[str]:
    """The expressions inside ``{{ }}`` in ``text``."""
    return [m.group(1).strip() for m in _TEMPLATE.finditer(text)] if "{{" in text else []


def as_text(value: Any) -> str:
    """How a value is written into a string: strings as they are, null as
    nothing, everything else as JSON (true, 0.93, ["a"])."""
    value = _plain(value)
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, separators=(",", ":"))


def render(text: str, resolve: Resolver) -> Any:
    """``text`` with each ``{{ expr }}`` replaced by its value. A string
    that is one template and nothing else keeps the value's type (for
    config: a number stays a number)."""
    if "{{" not in text:
        return text
    whole = _TEMPLATE.fullmatch(text.strip())
    if whole is not None and "{{" not in whole.group(1):
        return _plain(evaluate(parse(whole.group(1).strip()), resolve))
    return _TEMPLATE.sub(lambda m: as_text(evaluate(parse(m.group(1).strip()), resolve)), text)


def render_text(text: str, resolve: Resolver) -> str:
    return as_text(render(text, resolve))


def render_json(value: Any, resolve: Resolver) -> Any:
    """Templates in every string of a JSON value (keys stay as they are)."""
    if isinstance(value, str):
        return render(value, resolve)
    if isinstance(value, list):
        return [render_json(v, resolve) for v in value]
    if isinstance(value, dict):
        return {k: render_json(v, resolve) for k, v in value.items()}
    return value


def strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
