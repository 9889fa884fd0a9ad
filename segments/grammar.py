"""The rule language's grammar, and parsing a rule's text into a tree with
errors that name the line, the column and the problem (a bare Segment event
name gets a hint)."""

from __future__ import annotations

import re

from lark import Lark, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from features.events import SEGMENT_NAMES

GRAMMAR = r"""
?start: expr
?expr: or_expr
?or_expr: and_expr (_OR and_expr)*
?and_expr: not_expr (_AND not_expr)*
?not_expr: _NOT not_expr -> not_
         | comparison
?comparison: operand (COMP operand)?
         | operand _IN "(" literal ("," literal)* ")" -> in_
?operand: literal
        | call
        | dotted
        | "(" expr ")"
call: NAME "(" [expr ("," expr)*] ")"
dotted: NAME ("." NAME)*
?literal: DURATION -> duration
        | NUMBER -> number
        | STRING -> string
        | _TRUE -> true
        | _FALSE -> false
DURATION.2: /\d+(ms|s|m|h|d|w)\b/
COMP: "==" | "!=" | ">=" | "<=" | ">" | "<"
_OR.2: /or\b/
_AND.2: /and\b/
_NOT.2: /not\b/
_IN.2: /in\b/
_TRUE.2: /true\b/
_FALSE.2: /false\b/
NAME: /[A-Za-z_][A-Za-z0-9_]*/
STRING: /"[^"\n]*"/ | /'[^'\n]*'/
%import common.NUMBER
%import common.WS
%ignore WS
"""

_PARSER = Lark(GRAMMAR, parser="lalr", propagate_positions=True)


class RuleError(ValueError):
    """A rule that cannot be loaded, with where and why."""

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        self.line, self.column, self.problem = line, column, message
        where = f"{line}:{column}: " if line is not None else ""
        super().__init__(f"{where}{message}")


def _bare_name_hint(text: str) -> str:
    """A hint when a rule names a Segment event without quotes
    (``count(Product Viewed, 1h)``): the longest such name, whole words only.

    >>> print(_bare_name_hint("count(Product Added to Wishlist, 1h) >= 1"))
    : write an event name in quotes, "Product Added to Wishlist" (or its type, wishlist_add)
    """
    unquoted = re.sub(r'"[^"]*"', '""', text)
    found = [n for n in SEGMENT_NAMES if " " in n and re.search(rf"(?<![\w]){re.escape(n)}(?![\w])", unquoted)]
    if not found:
        return ""
    name = max(found, key=len)
    return f': write an event name in quotes, "{name}" (or its type, {SEGMENT_NAMES[name]})'


def parse(text: str) -> Tree:
    try:
        return _PARSER.parse(text)
    except UnexpectedCharacters as exc:
        char = text[exc.pos_in_stream] if exc.pos_in_stream is not None else "?"
        raise RuleError(f"unexpected character {char!r}", exc.line, exc.column) from None
    except UnexpectedEOF:
        line = text.count("\n") + 1
        raise RuleError(
            "the rule ends too early (an operand or ')' is missing)", line, len(text.rsplit("\n", 1)[-1]) + 1
        ) from None
    except UnexpectedToken as exc:
        token = exc.token
        if token.type == "$END":
            line = text.count("\n") + 1
            raise RuleError(
                "the rule ends too early (an operand or ')' is missing)", line, len(text.rsplit("\n", 1)[-1]) + 1
            ) from None
        raise RuleError(f"unexpected {token!s}{_bare_name_hint(text)}", token.line, token.column) from None
    except UnexpectedInput as exc:  # pragma: no cover - lark's other errors
        raise RuleError(str(exc), getattr(exc, "line", None), getattr(exc, "column", None)) from None
