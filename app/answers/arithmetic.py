"""A safe arithmetic evaluator for the formulas the model writes in ``calculate`` answers.

The model names the inputs and writes the arithmetic (``(36,274 / 77,147) * 100``); slmrag computes the
value, so an analyst checks a formula, not a small model's mental arithmetic. The formula is parsed with
:mod:`ast` and only numbers, ``+ - * /``, unary minus and parentheses are accepted: never ``eval``.
"""

from __future__ import annotations

import ast
import operator
import re
from dataclasses import dataclass

_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_MAX_LEN = 300
# A number as documents write it: thousands separators, decimals, an optional leading currency sign,
# and accounting negatives in parentheses are handled by the tokenizer below.
_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
# The longest run that looks like arithmetic: numbers, operators, parentheses, spaces, currency, %.
_FORMULA = re.compile(rf"[\(\-\$]*\s*(?:{_NUM})(?:[\s\$%\)]*[-+*/×÷x][\s\(\-\$]*(?:{_NUM})[\s%\)]*)+")


class FormulaError(ValueError):
    """The text is not a formula slmrag will evaluate (say what is wrong, for the answer's flag)."""


@dataclass(frozen=True)
class Calculation:
    formula: str  # as shown to the user, normalised (× -> *, thousands separators kept)
    value: float
    numbers: tuple[float, ...]  # the inputs, in order of appearance


def _normalise(formula: str) -> str:
    text = formula.replace("×", "*").replace("÷", "/").replace("−", "-").replace("$", "")
    text = re.sub(r"(?<=[\d\s)])x(?=[\s(\d])", "*", text)  # "3 x 4"
    return " ".join(text.split())


def evaluate(formula: str) -> Calculation:
    """Evaluate ``formula`` exactly as written; raises :class:`FormulaError` for anything else."""
    shown = _normalise(formula)
    if not shown or len(shown) > _MAX_LEN:
        raise FormulaError("the formula is empty or too long")
    if "%" in shown:
        # "12% * 300" is ambiguous to a reader; accept only a trailing percent sign after a number.
        shown_eval = re.sub(rf"({_NUM})\s*%", r"(\1/100)", shown)
    else:
        shown_eval = shown
    numbers: list[float] = []

    def strip_commas(m: re.Match) -> str:
        value = m.group(0).replace(",", "")
        return value

    source = re.sub(_NUM, strip_commas, shown_eval)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        raise FormulaError(f"not an arithmetic expression: {shown!r}") from exc

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            numbers.append(float(node.value))
            return float(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = walk(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Div) and right == 0:
                raise FormulaError("division by zero")
            return _OPS[type(node.op)](left, right)
        raise FormulaError(f"only numbers, + - * / and parentheses are allowed: {shown!r}")

    value = walk(tree)
    if "%" in shown:  # the "/100" inserted above are not inputs the user sees
        numbers = [n for n in numbers if n != 100.0] or numbers
    return Calculation(shown, value, tuple(numbers))


def find_formula(text: str) -> str | None:
    """The first (longest) arithmetic expression in the model's text, if any; it must have an operator."""
    best = None
    for m in _FORMULA.finditer(text):
        cand = m.group(0).strip()
        # balance parentheses the regex may have cut: drop unmatched ones at the ends
        while cand.count("(") > cand.count(")") and cand.startswith("("):
            cand = cand[1:].lstrip()
        while cand.count(")") > cand.count("(") and cand.endswith(")"):
            cand = cand[:-1].rstrip()
        if best is None or len(cand) > len(best):
            best = cand
    return best


def format_value(value: float, *, percent: bool = False) -> str:
    """A value as an analyst reads it: 2 decimals, thousands separators, no trailing noise."""
    if abs(value) >= 1000:
        text = f"{value:,.2f}"
    else:
        text = f"{value:.2f}" if abs(value - round(value)) > 1e-9 else f"{int(round(value))}"
    return text + ("%" if percent else "")
