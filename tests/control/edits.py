"""Edits of a request message, for tables of bad input."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf.message import Message

Edit = Callable[[Message], None]


def put(path: str, value: object) -> Edit:
    """An edit setting a (dotted, snake_case) field."""
    def edit(msg: Message) -> None:
        *parents, last = path.split(".")
        target = msg
        for p in parents:
            target = getattr(target, p)
        if isinstance(value, list):
            target.ClearField(last)
            getattr(target, last).extend(value)
        else:
            setattr(target, last, value)
    return edit


def drop(path: str) -> Edit:
    """An edit clearing a (dotted, snake_case) field."""
    def edit(msg: Message) -> None:
        *parents, last = path.split(".")
        target = msg
        for p in parents:
            target = getattr(target, p)
        target.ClearField(last)
    return edit


def ladder(*steps: tuple[str, str]) -> Edit:
    """An edit replacing the exit ladder with ``(gain_pct, sell_fraction)`` steps."""
    def edit(msg: Message) -> None:
        msg.exits.ClearField("ladder")  # type: ignore[attr-defined]
        for gain, fraction in steps:
            msg.exits.ladder.add(gain_pct=gain, sell_fraction=fraction)  # type: ignore[attr-defined]
    return edit


def many(*edits: Edit) -> Edit:
    """An edit applying ``edits`` in order."""
    def edit(msg: Message) -> None:
        for e in edits:
            e(msg)
    return edit
