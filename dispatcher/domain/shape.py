"""Shape problems of a campaign file, and the sections of a misshapen file that can still be checked.

Pydantic finds every shape error at once; this module words them for the campaign's author (the
allowed values of a choice, the closest known key for an unknown one, the value given for a wrong
type) and keeps each section whose shape is usable once its misshapen keys are left out, so that
content validation reports the rest of the file's problems alongside the shape problems.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from dispatcher.domain.campaign_file import (
    AddresseeSpec,
    Campaign,
    CampaignSpec,
    CcSpec,
    LetterSpec,
    Sender,
    Supporters,
)
from dispatcher.domain.errors import Problem

Model = TypeVar("Model", bound=BaseModel)
Loc = tuple[int | str, ...]
_SHOWN_CHARS = 60  # how much of a wrong value a message quotes


@dataclass(frozen=True, kw_only=True)
class Sections:
    """The sections of a campaign file that have a usable shape; ``None`` or absent where they do not."""

    campaign: Campaign | None
    sender: Sender | None
    letter: LetterSpec | None
    to: dict[int, AddresseeSpec]  # by their index in the file, so problems name the right addressee
    cc: dict[int, CcSpec]
    supporters: Supporters | None
    unread: frozenset[str] = frozenset()  # values left out for their shape, e.g. "to[0].fax"

    @classmethod
    def of(cls, spec: CampaignSpec) -> Sections:
        """Every section of a campaign file whose shape is right."""
        return cls(
            campaign=spec.campaign,
            sender=spec.sender,
            letter=spec.letter,
            to=dict(enumerate(spec.to)),
            cc=dict(enumerate(spec.cc)),
            supporters=spec.supporters,
        )

    def letter_spec(self) -> CampaignSpec | None:
        """What the letter template is rendered with, if every part it sees is usable."""
        if self.campaign is None or self.sender is None or self.letter is None or 0 not in self.to:
            return None
        return CampaignSpec.model_construct(
            campaign=self.campaign,
            sender=self.sender,
            letter=self.letter,
            to=[self.to[i] for i in sorted(self.to)],
            cc=[self.cc[i] for i in sorted(self.cc)],
            supporters=self.supporters,
        )


def usable_sections(data: dict[str, Any]) -> Sections:
    """Each section of ``data`` that validates, once the keys named by its shape errors are left out."""
    unread: set[str] = set()
    people = {role: data.get(role) for role in ("to", "cc")}
    return Sections(
        campaign=_lenient(Campaign, data.get("campaign"), "campaign", unread),
        sender=_lenient(Sender, data.get("sender"), "sender", unread),
        letter=_lenient(LetterSpec, data.get("letter"), "letter", unread),
        to=_addressees(people["to"], "to", unread, model=AddresseeSpec),
        cc=_addressees(people["cc"], "cc", unread, model=CcSpec),
        supporters=_lenient(Supporters, data.get("supporters"), "supporters", unread),
        unread=frozenset(unread),
    )


def _addressees(value: object, role: str, unread: set[str], *, model: type[Model]) -> dict[int, Model]:
    items = value if isinstance(value, list) else []
    found = {i: _lenient(model, item, f"{role}[{i}]", unread) for i, item in enumerate(items)}
    return {i: person for i, person in found.items() if person is not None}


def _lenient(model: type[Model], value: object, path: str, unread: set[str]) -> Model | None:
    """``value`` as ``model``; failing that, without its misshapen keys (recorded in ``unread``)."""
    if not isinstance(value, dict):
        return None
    try:
        return model.model_validate(value)
    except ValidationError as err:
        trimmed = copy.deepcopy(value)
        for error in err.errors():
            dropped = _drop(trimmed, error["loc"])
            if dropped:
                unread.add(path + location(dropped, nested=True))
    try:
        return model.model_validate(trimmed)
    except ValidationError:
        return None


def _drop(data: dict[str, Any], loc: Loc) -> Loc:
    """Delete the innermost table key on ``loc``; return its location (empty if there was none)."""
    node: Any = data
    table: dict[str, Any] | None = None
    key, depth = "", 0
    for i, part in enumerate(loc):
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            table, key, depth = node, part, i + 1
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break
    if table is None:
        return ()
    del table[key]
    return loc[:depth]


def shape_problems(err: ValidationError, *, file: str) -> list[Problem]:
    """One Problem per shape error, at its dotted location, in words for the campaign's author."""
    problems = []
    for error in err.errors():
        message, suggestion = _describe(error)
        problems.append(Problem(file=file, where=location(error["loc"]), message=message, suggestion=suggestion))
    return problems


def location(loc: Loc, *, nested: bool = False) -> str:
    """A pydantic location as the campaign file writes it: ``to[0].fax[1]`` (``.to[0]`` when ``nested``)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out or nested else str(part))
    return out


def _describe(error: ErrorDetails) -> tuple[str, str | None]:
    kind, loc, value = error["type"], error["loc"], error.get("input")
    if kind == "missing":
        return "required, but missing", None
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    choices = _choices(loc)
    if kind == "literal_error" and choices:
        return f"{value!r} is not one of {', '.join(repr(c) for c in choices)}", None
    if kind in ("value_error", "assertion_error"):
        return error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, "), None
    return f"{error['msg']} (got {_shown(value)})", None


def _unknown_key(loc: Loc) -> tuple[str, str | None]:
    key, parent = str(loc[-1]), loc[:-1]
    if not parent:
        place = "at the top level"
    elif isinstance(parent[-1], int):
        place = f"in {location(parent)}"
    else:  # quoted, not in brackets: the command line prints with rich, which reads "[name]" as markup
        place = f"in table {location(parent)!r}"
    model = _model_at(parent)
    known = sorted(model.model_fields) if model is not None else []
    close = difflib.get_close_matches(key, known, n=1)
    if close or not known:
        return f"unknown key {key!r} {place}", close[0] if close else None
    return f"unknown key {key!r} {place} (its keys: {', '.join(known)})", None


def _model_at(loc: Loc) -> type[BaseModel] | None:
    node = _annotation_at(loc)
    return node if isinstance(node, type) and issubclass(node, BaseModel) else None


def _choices(loc: Loc) -> tuple[object, ...]:
    node = _annotation_at(loc)
    return get_args(node) if get_origin(node) is Literal else ()


def _annotation_at(loc: Loc) -> Any:
    """The type the campaign file's schema expects at ``loc`` (``None`` where it names no field)."""
    node: Any = CampaignSpec
    for part in loc:
        node = _without_none(node)
        if isinstance(part, int):
            node = get_args(node)[0] if get_origin(node) is list else None
        elif isinstance(node, type) and issubclass(node, BaseModel) and part in node.model_fields:
            node = node.model_fields[part].annotation
        else:
            return None
    return _without_none(node)


def _without_none(node: Any) -> Any:
    """``X`` for ``X | None``; anything else unchanged."""
    args = get_args(node)
    if get_origin(node) in (Union, type(int | None)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else node
    return node


def _shown(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."
