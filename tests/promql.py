"""Just enough PromQL to name the metrics an expression reads (for checking dashboards and rules against a scrape)."""

from __future__ import annotations

import re

KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects: identifiers that are neither functions, keywords, label names (in
    ``{...}`` or a grouping clause) nor parts of a duration or a number."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        name = match.group(0)
        before = text[match.start() - 1] if match.start() else " "
        after = text[match.end():].lstrip()[:1]
        if name.lower() in KEYWORDS or after == "(" or before.isdigit() or before == ".":
            continue
        names.add(name)
    return names


def balanced(expr: str) -> bool:
    """Whether brackets and quotes pair up (a cheap syntax check)."""
    text = _STRING.sub('""', expr)
    if '"' in text.replace('""', ""):
        return False
    depth: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for ch in text:
        if ch in "([{":
            depth.append(ch)
        elif ch in pairs and (not depth or depth.pop() != pairs[ch]):
            return False
    return not depth
