"""Post-processing steps that put the model's answer into a required format.

- ``json``: the answer must be JSON matching a JSON Schema (Draft 2020-12). A Markdown
  code fence around it, or prose before and after one JSON object or array, is removed.
  An answer that does not parse or validate is sent back to the model once, with the
  problem named; if it still fails, the request is blocked. The text becomes the
  canonical form: compact (no spaces after ``,`` and ``:``), non-ASCII kept as is, keys
  in the model's order. ``context.metadata["json"]`` holds the parsed value.
- ``markdown``: Markdown to HTML (CommonMark; raw HTML in the answer is escaped, and
  ``javascript:`` and similar links are not made links) or to plain text.

Decisions: ``pass`` (the whole answer was valid JSON, though its text is still made
canonical; or Markdown that renders to itself), ``changed`` (a fence or prose was removed,
or Markdown rendered), ``repaired`` (the model's second answer was used), ``blocked``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, Literal, NoReturn, Protocol

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import SchemaError, best_match  # type: ignore[import-untyped]
from markdown_it import MarkdownIt
from markdown_it.tree import SyntaxTreeNode
from pydantic import Field, field_validator
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from inhouse.errors import InvalidRequestError
from inhouse.flows.context import Block, FlowContext, Stage, StepOptions, StepType
from inhouse.flows.json_schema import SafeValidator, check_patterns

_POST = frozenset({Stage.POST})

FORMAT_REFUSAL = (
    "抱歉，模型的回答不符合要求的格式。"
    "/ Sorry, the model's answer did not match the required format."
)
"""The answer given in place of one that stayed invalid after the repair."""

_MESSAGE_LIMIT = 300
"""Longest validation message quoted back to the model (messages quote the answer)."""
_SCHEMA_LIMIT = 4000
"""Longest schema repeated in the repair instruction; a larger one is left out."""
_SCAN_LIMIT = 32
"""Failed parse attempts at ``{`` or ``[`` in prose before giving up (bounds the work)."""

_FENCE = re.compile(r"```[ \t]*(?:json[c5]?|JSON)?[ \t]*\n(.*?)```", re.DOTALL)
_OPENER = re.compile(r"[\[{]")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not allowed in JSON")


# NaN and Infinity are not JSON, although Python's parser accepts them by default.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


class JsonFormatOptions(StepOptions):
    json_schema: dict[str, Any] = Field(
        alias="schema", description="the JSON Schema (Draft 2020-12) the answer must match"
    )
    repair: bool = Field(
        default=True, description="ask the model once more, naming the problem, before blocking"
    )

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        try:
            Draft202012Validator.check_schema(schema)
            check_patterns(schema)
        except SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema at {exc.json_path}: {exc.message}") from None
        except InvalidRequestError as exc:
            raise ValueError(exc.message) from None
        _check_references(schema)
        return schema


def _check_references(schema: dict[str, Any]) -> None:
    """Every ``$ref`` must point inside the schema: nothing is fetched from elsewhere."""
    resource = DRAFT202012.create_resource(schema)
    base = resource.id() or ""
    resolver = Registry().with_resource(base, resource).resolver(base)
    for scope, ref in _references(schema, resolver):
        try:
            scope.lookup(ref)
        except Unresolvable:
            raise ValueError(
                f"$ref {ref!r} does not resolve inside the schema; "
                "put the definition under $defs (references are never fetched)"
            ) from None


class _Scope(Protocol):
    """The part of ``referencing``'s resolver used here (the class itself is private)."""

    def lookup(self, ref: str) -> object: ...

    def in_subresource(self, subresource: Resource[Any]) -> _Scope: ...


def _references(contents: Any, resolver: _Scope) -> Iterator[tuple[_Scope, str]]:
    if not isinstance(contents, dict):
        return
    if DRAFT202012.id_of(contents):
        resolver = resolver.in_subresource(DRAFT202012.create_resource(contents))
    ref = contents.get("$ref")
    if isinstance(ref, str):
        yield resolver, ref
    for sub in DRAFT202012.subresources_of(contents):
        yield from _references(sub, resolver)


class _Invalid(Exception):
    """Why an answer is not acceptable: ``kind`` for the trace, the text for the model."""

    def __init__(self, kind: Literal["syntax", "schema"], problem: str) -> None:
        super().__init__(problem)
        self.kind = kind
        self.problem = problem


class JsonFormatStep:
    name = "json"

    def __init__(self, options: JsonFormatOptions) -> None:
        self._repair = options.repair
        self.may_ask_again = options.repair
        # An empty registry: a $ref is resolved inside the schema, never fetched.
        self._validator = SafeValidator(options.json_schema, registry=Registry())
        compact = json.dumps(options.json_schema, ensure_ascii=False, separators=(",", ":"))
        self._schema_text = compact if len(compact) <= _SCHEMA_LIMIT else None

    def run(self, context: FlowContext) -> None:
        try:
            value, extracted = self._accept(context.text)
        except _Invalid as first:
            if not (self._repair and context.regenerate is not None):
                self._block(context, first)
                return
            try:
                value, _ = self._accept(context.regenerate(self._instruction(first)))
            except _Invalid as second:
                self._block(context, second)
                return
            context.decision = "repaired"
            context.decision_details = {"problem": first.kind}
        else:
            context.decision = "changed" if extracted else "pass"
            context.decision_details = {"extracted": extracted} if extracted else {}
        context.text = canonical_json(value)
        context.metadata["json"] = value

    def _accept(self, text: str) -> tuple[Any, str | None]:
        value, extracted = _extract(text)
        error = best_match(self._validator.iter_errors(value))
        if error is not None:
            message = str(error.message)
            if len(message) > _MESSAGE_LIMIT:
                message = message[:_MESSAGE_LIMIT] + "…"
            raise _Invalid("schema", f"at {error.json_path}: {message}")
        return value, extracted

    def _instruction(self, invalid: _Invalid) -> str:
        instruction = (
            "Your previous answer did not match the required JSON format "
            f"({invalid.problem}). Answer again with only the corrected JSON: "
            "no explanation and no code fence."
        )
        if self._schema_text is not None:
            instruction += f" It must validate against this JSON Schema: {self._schema_text}"
        return instruction

    def _block(self, context: FlowContext, invalid: _Invalid) -> None:
        context.blocked = Block(step=self.name, category="format", message=FORMAT_REFUSAL)
        context.decision = "blocked"
        context.decision_details = {"problem": invalid.kind}


def _extract(text: str) -> tuple[Any, str | None]:
    """The JSON value in a model's answer, and what was removed around it.

    The second item is ``None`` when the whole text is JSON, ``"fence"`` when it came
    from the one ```` ```json ```` (or unlabelled) code fence, ``"prose"`` when the text
    holds exactly one top-level object or array among other words.
    """
    try:
        return _loads(text.strip()), None
    except ValueError as exc:
        whole_error = exc
    fences = _FENCE.findall(text)
    if len(fences) == 1:
        try:
            return _loads(fences[0].strip()), "fence"
        except ValueError as exc:
            raise _Invalid("syntax", f"the JSON in the code fence does not parse: {exc}") from None
    found = list(_top_level_values(text))
    if len(found) == 1:
        return found[0], "prose"
    if len(found) > 1:
        raise _Invalid("syntax", "the answer holds more than one JSON value; give exactly one")
    if _OPENER.search(text) is None:
        raise _Invalid("syntax", "the answer holds no JSON object or array")
    raise _Invalid("syntax", f"the answer is not valid JSON: {whole_error}")


def _loads(text: str) -> Any:
    try:
        value, end = _DECODER.raw_decode(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if end != len(text):
        raise ValueError(f"extra data after the JSON value at char {end}")
    return value


def _top_level_values(text: str) -> Iterator[Any]:
    """Objects and arrays that parse, outside one another; stops after the second."""
    resume = 0
    failures = 0
    found = 0
    for opener in _OPENER.finditer(text):
        if opener.start() < resume:
            continue
        try:
            value, resume = _DECODER.raw_decode(text, opener.start())
        except (ValueError, RecursionError):
            failures += 1
            if failures > _SCAN_LIMIT:
                return
            continue
        yield value
        found += 1
        if found > 1:
            return


def canonical_json(value: Any) -> str:
    """Compact JSON, non-ASCII characters as they are, keys in their original order."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


class MarkdownOptions(StepOptions):
    to: Literal["text", "html"] = Field(description="render the Markdown answer to this")


class MarkdownStep:
    """Markdown to HTML or plain text (see `markdown_to_text` for the text rules)."""

    name = "markdown"

    def __init__(self, options: MarkdownOptions) -> None:
        self._to = options.to
        self._parser = markdown_parser()

    def run(self, context: FlowContext) -> None:
        if self._to == "html":
            rendered = self._parser.render(context.text)
        else:
            rendered = markdown_to_text(context.text, self._parser)
        context.decision = "changed" if rendered != context.text else "pass"
        context.text = rendered


def markdown_parser() -> MarkdownIt:
    """CommonMark with raw HTML off: tags in the source come out escaped."""
    return MarkdownIt("commonmark", {"html": False})


def markdown_to_text(source: str, parser: MarkdownIt | None = None) -> str:
    """Plain text from Markdown, walking markdown-it's token tree.

    Emphasis and links become their text (an image its alt text), headings their text,
    code spans and blocks their content; list items become ``- `` lines (ordered ones
    ``1. ``, numbered from the list's start), nested items indented by the marker's
    width; blocks are separated by a blank line, items of a tight list by a line break;
    rules (``---``) and block-quote markers are dropped; entities are decoded.
    """
    tree = SyntaxTreeNode((parser or markdown_parser()).parse(source))
    return _blocks(tree.children, tight=False)


def _blocks(nodes: list[SyntaxTreeNode], *, tight: bool) -> str:
    rendered = (_block(node) for node in nodes)
    return ("\n" if tight else "\n\n").join(text for text in rendered if text)


def _block(node: SyntaxTreeNode) -> str:
    kind = node.type
    if kind in ("paragraph", "heading"):
        return "".join(_inline(child) for child in node.children)
    if kind in ("code_block", "fence", "html_block"):
        return node.content.rstrip("\n")
    if kind in ("bullet_list", "ordered_list"):
        return _list(node)
    if kind == "hr":
        return ""
    return _blocks(node.children, tight=False)  # blockquote, and any other container


def _list(node: SyntaxTreeNode) -> str:
    # markdown-it hides the paragraphs of a tight list.
    tight = all(
        child.hidden
        for item in node.children
        for child in item.children
        if child.type == "paragraph"
    )
    ordered = node.type == "ordered_list"
    items: list[str] = []
    for number, item in enumerate(node.children, start=int(node.attrs.get("start", 1))):
        marker = f"{number}. " if ordered else "- "
        lines = _blocks(item.children, tight=tight).split("\n")
        indent = " " * len(marker)
        rest = [f"{indent}{line}" if line else "" for line in lines[1:]]
        items.append("\n".join([marker + lines[0], *rest]).rstrip())
    return ("\n" if tight else "\n\n").join(items)


def _inline(node: SyntaxTreeNode) -> str:
    kind = node.type
    if kind in ("text", "code_inline", "html_inline"):
        return node.content
    if kind in ("softbreak", "hardbreak"):
        return "\n"
    return "".join(_inline(child) for child in node.children)  # inline, em, strong, link ...


JSON_FORMAT = StepType(
    name="json",
    options=JsonFormatOptions,
    build=JsonFormatStep,
    stages=_POST,
    description="the answer as JSON matching a schema; one repair, else blocked",
)
MARKDOWN = StepType(
    name="markdown",
    options=MarkdownOptions,
    build=MarkdownStep,
    stages=_POST,
    description="Markdown answer to HTML (raw HTML escaped) or plain text",
)
