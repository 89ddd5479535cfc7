"""The letter templates' sandbox: Jinja2's immutable sandbox, bounded in time and memory.

Jinja2's sandbox refuses attribute tricks, but a template may still loop ``range(99999)`` inside
``range(99999)``, make ``'x' * 300000000`` or call a macro that calls itself. Here every operation
that can make large text or many items is measured *before* it runs and refused over its limit:

- text (any string a template makes, and the letter itself): at most ``MAX_TEXT`` characters;
- a range or a list: at most ``MAX_ITEMS`` items; loop iterations in one rendering: ``MAX_ITEMS``;
- calls nested inside one another (macros, ``caller()``, recursive loops): at most ``MAX_DEPTH``;
- numbers: at most ``MAX_INT_BITS`` bits.

The hooks are the sandbox's own (``call``, ``call_binop`` on ``*``, ``**``, ``+`` and ``%``,
``wrap_str_format``, ``finalize``), every filter wrapped with the same checks, and a code generator
that measures ``~`` concatenations, counts loop iterations and gives each output buffer (``{% set %}``
blocks, macros) a bounded size. Each refusal is a :class:`TemplateLimitError`, raised while the
template's frame is on the stack, so it is reported with the template line.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterable, Iterator, Sized
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from dispatcher.domain.characters import IN_LETTER, unsafe_char_in_text

MAX_TEXT = 262_144
MAX_ITEMS = 10_000
MAX_DEPTH = 32
MAX_INT_BITS = 4_096

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[diouxXeEfFgGcrsa%]")
_PADDING_METHODS = frozenset({"ljust", "rjust", "center", "zfill"})


class TemplateLimitError(SecurityError):
    """A letter template went over one of the sandbox's limits of time or memory."""


@dataclass
class _Budget:
    """What one rendering has used so far."""

    iterations: int = 0
    depth: int = 0


_BUDGET: ContextVar[_Budget | None] = ContextVar("letter_template_budget", default=None)


@contextmanager
def rendering_budget() -> Iterator[None]:
    """One rendering's budget of loop iterations and nested calls (each rendering starts afresh)."""
    token = _BUDGET.set(_Budget())
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _budget() -> _Budget:
    """The current rendering's budget; outside :func:`rendering_budget`, a fresh one per use."""
    return _BUDGET.get() or _Budget()


class _BoundedBuffer(list[str]):
    """An output buffer (``{% set %}`` block, macro body) that refuses to grow past ``MAX_TEXT``."""

    size = 0

    def append(self, item: str) -> None:
        self._grow(len(item))
        super().append(item)

    def extend(self, items: Iterable[str]) -> None:
        items = list(items)
        self._grow(sum(len(i) for i in items))
        super().extend(items)

    def _grow(self, by: int) -> None:
        self.size += by
        _check_text(self.size)


class _LetterCodeGenerator(CodeGenerator):
    """Jinja2's code generator, with loops counted, ``~`` measured and output buffers bounded."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.bounded_buffer()")

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        count = nodes.EnvironmentAttribute("counted_loop", lineno=node.lineno)
        node.iter = nodes.Call(count, [node.iter], [], None, None, lineno=node.lineno)
        super().visit_For(node, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"{join}(environment.measured_parts((")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write(")))")


class LetterSandbox(ImmutableSandboxedEnvironment):
    """The sandbox letter templates run in (see the module's docstring for its limits)."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})
    code_generator_class = _LetterCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        self.globals.pop("lipsum", None)  # lorem ipsum of any length: no letter needs it
        self.globals["range"] = _letter_range
        self.filters = {name: _measured_filter(name, f) for name, f in self.filters.items()}

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _check_binop(operator, left, right)
        return _checked(super().call_binop(context, operator, left, right))

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        args = _checked_call_args(obj, args, kwargs)
        budget = _budget()
        if budget.depth >= MAX_DEPTH:
            raise TemplateLimitError(f"calls nested more than {MAX_DEPTH} deep (a macro that calls itself?)")
        budget.depth += 1
        try:
            return _checked(super().call(context, obj, *args, **kwargs))
        finally:
            budget.depth -= 1

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fields = _format_fields(value.__self__)
        fixed = len(value.__self__)

        def measured(*args: Any, **kwargs: Any) -> str:
            _check_text(fixed + fields * max((text_size(a) for a in (*args, *kwargs.values())), default=0))
            return wrapper(*args, **kwargs)

        return measured

    @staticmethod
    def bounded_buffer() -> list[str]:
        return _BoundedBuffer()

    @staticmethod
    def counted_loop(iterable: Iterable[Any]) -> Iterator[Any]:
        budget = _budget()
        for item in iterable:
            budget.iterations += 1
            if budget.iterations > MAX_ITEMS:
                raise TemplateLimitError(f"more than {MAX_ITEMS} loop iterations in one letter")
            yield item

    @staticmethod
    def measured_parts(parts: tuple[Any, ...]) -> tuple[Any, ...]:
        _check_text(sum(text_size(p) for p in parts))
        return parts


def text_size(value: object) -> int:
    """About how many characters ``str(value)`` has, without making it; counting stops past ``MAX_TEXT``."""
    total, pending = 0, [value]
    while pending and total <= MAX_TEXT:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item) + (2 if item is not value else 0)
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
            total += 2 + 4 * min(len(item), MAX_TEXT)
        elif isinstance(item, list | tuple | set | frozenset | range):
            pending.extend(item[: MAX_TEXT + 1] if isinstance(item, list | tuple | range) else item)
            total += 2 + 2 * min(len(item), MAX_TEXT)
        else:
            attrs = getattr(item, "_Namespace__attrs", None)  # a namespace() shows its attributes
            total += 32
            if isinstance(attrs, dict):
                pending.append(attrs)
    return total


def _letter_range(*args: int) -> range:
    """``range()`` for templates: at most ``MAX_ITEMS`` items."""
    items = range(*args)
    try:
        count = len(items)
    except OverflowError:
        raise TemplateLimitError(f"range() of too many items to count: at most {MAX_ITEMS}") from None
    if count > MAX_ITEMS:
        raise TemplateLimitError(f"range() of {count} items: at most {MAX_ITEMS}")
    return items


def _finalize(value: Any) -> Any:
    """Every ``{{ value }}`` on its way into the letter: bounded, and no control characters."""
    _check_text(text_size(value))
    text = value if isinstance(value, str) else str(value)
    unsafe = unsafe_char_in_text(text)
    if unsafe:
        raise SecurityError(f"the letter would contain {unsafe}: {IN_LETTER}")
    return text


def _check_text(size: int) -> None:
    if size > MAX_TEXT:
        raise TemplateLimitError(f"would make a text of {size} characters: at most {MAX_TEXT}")


def _check_items(count: int) -> None:
    if count > MAX_ITEMS:
        raise TemplateLimitError(f"would make a list of {count} items: at most {MAX_ITEMS}")


def _check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise TemplateLimitError(f"would make a number of about {bits} bits: at most {MAX_INT_BITS}")


def _checked(value: Any) -> Any:
    """A result as made: refused if it is text or a list over its limit, or bytes (whose methods and
    operators are not measured: a letter is text)."""
    if isinstance(value, bytes | bytearray | memoryview):
        raise TemplateLimitError("bytes are not available in a letter template")
    if isinstance(value, str):
        _check_text(len(value))
    elif isinstance(value, list | tuple):
        _check_items(len(value))
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_binop(operator: str, left: Any, right: Any) -> None:
    """Measure ``left <operator> right`` before it is computed."""
    if operator == "*":
        _check_product(left, right)
    elif operator == "**" and _is_int(left) and _is_int(right) and right > 0:
        _check_bits(max(abs(left).bit_length() - 1, 0) * right + 1)
    elif operator == "+" and isinstance(left, str) and isinstance(right, str):
        _check_text(len(left) + len(right))
    elif operator == "+" and isinstance(left, list | tuple) and isinstance(right, list | tuple):
        _check_items(len(left) + len(right))
    elif operator == "%" and isinstance(left, str):
        _check_percent_format(left, right if isinstance(right, tuple) else (right,))


def _check_product(left: Any, right: Any) -> None:
    if _is_int(left) and _is_int(right):
        _check_bits(abs(left).bit_length() + abs(right).bit_length())
        return
    sequence, times = (left, right) if _is_int(right) else (right, left)
    if not _is_int(times) or not isinstance(sequence, str | list | tuple):
        return
    if isinstance(sequence, str):
        _check_text(len(sequence) * times)
    else:
        _check_items(len(sequence) * times)
        _check_text(text_size(sequence) * times)


def _check_percent_format(template: str, args: tuple[Any, ...]) -> None:
    """``template % args``: no ``*`` widths, widths and precisions within ``MAX_TEXT``, bounded result."""
    specs = _PERCENT_SPEC.findall(template)
    for width, precision in specs:
        if "*" in (width, precision):
            raise TemplateLimitError("a '*' width or precision is not allowed in a format")
        for number in (width, precision):
            if number and int(number) > MAX_TEXT:
                raise TemplateLimitError(f"format width {int(number)} is over {MAX_TEXT}")
    largest = max((text_size(a) for a in args), default=0)
    _check_text(len(template) + len(specs) * largest + sum(int(w or 0) + int(p or 0) for w, p in specs))


def _format_fields(template: str) -> int:
    """How many fields ``template.format()`` fills; refused if a width is too large or nested."""
    fields = 0
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return 0  # str.format will raise the same error when called
    for _, name, spec, _ in parsed:
        if name is None:
            continue
        fields += 1
        if "{" in (spec or ""):
            raise TemplateLimitError("a nested field in a format specification is not allowed")
        for number in re.findall(r"\d+", spec or ""):
            if int(number) > MAX_TEXT:
                raise TemplateLimitError(f"format width {int(number)} is over {MAX_TEXT}")
    return fields


def _checked_call_args(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Measure a call of a text method before it runs; a recursive ``loop()`` call is counted too."""
    if isinstance(obj, LoopContext) and args:
        return (LetterSandbox.counted_loop(args[0]), *args[1:])
    text, name = getattr(obj, "__self__", None), getattr(obj, "__name__", "")
    if not isinstance(text, str):
        return args
    if name in _PADDING_METHODS:
        width = args[0] if args else kwargs.get("width", 0)
        if _is_int(width) and width > MAX_TEXT:
            raise TemplateLimitError(f"{name}() width {width} is over {MAX_TEXT}")
    elif name == "expandtabs":
        size = args[0] if args else kwargs.get("tabsize", 8)
        _check_text(len(text) + text.count("\t") * (size if _is_int(size) else 0))
    elif name == "replace" and len(args) >= 2:
        _check_replace(text, *args)
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max((len(v) for v in args[0].values() if isinstance(v, str)), default=1)
        _check_text(len(text) * max(longest, 1))
    elif name == "join" and args:
        items = list(args[0]) if not isinstance(args[0], Sized) else args[0]
        _check_join(text, items)
        return (items, *args[1:])
    return args


def _check_replace(text: str, old: Any, new: Any, count: Any = -1) -> None:
    if not isinstance(old, str) or not isinstance(new, str):
        return
    found = text.count(old) if old else len(text) + 1
    if _is_int(count) and count >= 0:
        found = min(found, count)
    _check_text(len(text) + found * (len(new) - len(old)))


def _check_join(separator: str, items: Any) -> None:
    count = len(items)
    _check_items(count)
    _check_text(sum(text_size(i) for i in items) + len(separator) * max(count - 1, 0))


def _measured_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A Jinja2 filter with its input and arguments measured before it runs, and its result after."""

    @functools.wraps(function)
    def measured(*args: Any, **kwargs: Any) -> Any:
        passed = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0
        args = (*args[:passed], *_checked_filter_args(name, args[passed:], kwargs))
        return _checked(function(*args, **kwargs))

    return measured


def _checked_filter_args(name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Measure a filter's value and arguments: no argument over ``MAX_TEXT``, no result over its limit."""
    if not args:
        return args
    value, rest = args[0], args[1:]
    _check_text(text_size(value))
    for number in (*rest, *kwargs.values()):
        if _is_int(number) and abs(number) > MAX_TEXT:
            raise TemplateLimitError(f"{name}: {number} is over {MAX_TEXT}")
    if name == "join":
        value = list(value) if not isinstance(value, Sized) else value
        _check_join(str(rest[0] if rest else kwargs.get("d", "")), value)
    elif isinstance(value, str):
        _check_text_filter(name, value, rest, kwargs)
    return (value, *rest)


def _check_text_filter(name: str, text: str, rest: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """The filters that can make text much longer than their input: measure what they would make."""
    if name == "replace" and len(rest) >= 2:
        _check_replace(text, *rest[:3])
    elif name == "indent":
        width = rest[0] if rest else kwargs.get("width", 4)
        per_line = len(width) if isinstance(width, str) else width if _is_int(width) else 0
        _check_text(len(text) + (text.count("\n") + 1) * per_line)
    elif name == "wordwrap":
        width = rest[0] if rest else kwargs.get("width", 79)
        wrap = rest[2] if len(rest) > 2 else kwargs.get("wrapstring") or "\n"
        lines = len(text) // max(width if _is_int(width) else 1, 1) + 1
        _check_text(len(text) + lines * len(str(wrap)))
    elif name == "format":
        _check_percent_format(text, (*rest, *kwargs.values()))
