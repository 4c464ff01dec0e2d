"""The ``clean`` step: tidy text before it reaches a model (or a user).

What each option does, in the order the step applies them:

- ``html``: HTML to text with the standard library's parser. ``script``, ``style`` and
  ``template`` contents are dropped, comments too; block elements (``p``, ``div``, ``li``,
  ``h1`` ...) become line breaks, ``p``-like ones a blank line; entities are unescaped;
  whitespace inside text collapses as a browser would, except in ``pre``. Only use it on
  HTML: in plain text, ``<`` followed by a letter starts a tag. About 0.4 ms per KB.
- ``fullwidth``: U+FF01-U+FF5E become U+0021-U+007E and the ideographic space U+3000
  becomes a space, except the seven that Chinese text writes full-width as a rule:
  ！ U+FF01, （ U+FF08, ） U+FF09, ， U+FF0C, ： U+FF1A, ； U+FF1B and ？ U+FF1F. Other
  CJK punctuation (。、「」《》【】 ...) lies outside that block and is never touched.
- ``control``: line breaks are unified (CRLF, CR, VT, FF, U+001C-U+001E, NEL, U+2028 and
  U+2029 become ``\\n``); then control characters (Cc) other than ``\\n`` and ``\\t``,
  format characters (Cf: zero-width space and joiners, soft hyphen, word joiner, BOM,
  bidi marks, embeddings, overrides and isolates, invisible tag characters ...) and lone
  surrogates are removed. One exception: a zero-width joiner between two emoji stays, so
  sequences such as 👩‍💻 survive.
- ``chinese``: traditional ↔ simplified with OpenCC's dictionaries (phrases first, then
  characters). Pure Python: about 0.6 ms per KB of Chinese; text without Han characters
  is skipped.
- ``whitespace``: tabs, runs of spaces and the other Unicode spaces but U+3000 become one
  space; lines are trimmed at both ends; no more than one blank line in a row; nothing
  blank at either end. Fenced code blocks (```` ``` ```` or ``~~~``) are left as they
  are, so code keeps its indentation; code pasted without a fence does not.

With the default options, 1 KB of ordinary text takes about 10 µs: each pass first
checks in C (``in``, ``isascii``, ``isprintable``) whether it has anything to do, and
the work itself is compiled regexes and ``str.translate`` over the runs that need it.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Literal

from opencc import OpenCC  # type: ignore[import-untyped]
from pydantic import Field

from inhouse.flows.context import FlowContext, StepOptions, StepType

# Line breaks that str.splitlines() knows: CRLF first, so it becomes one break.
_LINE_BREAK = re.compile("\r\n?|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")

# Cc and Cf as of Unicode 15.1 (a test checks the running Python's table), lone
# surrogates, without \t, \n and the zero-width joiner, which is handled on its own.
_INVISIBLE_RANGES = (
    "\x00-\x08\x0e-\x1b\x1f\x7f-\x84\x86-\x9f\xad"
    "\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b\u200c\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f"
    "\ud800-\udfff\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)
_INVISIBLE = re.compile(f"[{_INVISIBLE_RANGES}]+")
_ZWJ = "\u200d"
_EMOJI = "[\u2600-\u27bf\u2b00-\u2bff\ufe0f\U0001f000-\U0001faff]"
_STRAY_ZWJ = re.compile(f"(?<!{_EMOJI}){_ZWJ}|{_ZWJ}(?!{_EMOJI})")

_KEEP_FULLWIDTH = "！（），：；？"
_WIDTH = {
    code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F) if chr(code) not in _KEEP_FULLWIDTH
} | {0x3000: 0x20}
_WIDE = re.compile("([\uff02-\uff07\uff0a\uff0b\uff0d-\uff19\uff1c-\uff1e\uff20-\uff5e\u3000]+)")

_HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")

# Horizontal whitespace: the Unicode space separators but U+3000 (the fullwidth option's
# business; Chinese text indents paragraphs with it), and the tab.
_OTHER_SPACES = "\t\xa0\u1680\u2000-\u200a\u202f\u205f"
_RUN = re.compile(f" [ {_OTHER_SPACES}]+|[{_OTHER_SPACES}][ {_OTHER_SPACES}]*")
_BLANK_LINES = re.compile("\n{3,}")
# A fenced code block (CommonMark: three or more backticks or tildes, closed by at least
# as many of the same, or by the end of the text): whitespace inside is left alone.
_FENCE = re.compile(
    r"^[ \t]*(`{3,}|~{3,})[^\n]*(?:\n.*?(?:\n[ \t]*\1[`~]*[ \t]*(?=\n|\Z)|\Z)|\Z)",
    re.MULTILINE | re.DOTALL,
)


class CleanOptions(StepOptions):
    whitespace: bool = Field(
        default=True, description="collapse spaces, trim lines and ends, one blank line at most"
    )
    control: bool = Field(
        default=True,
        description="remove control and format characters (zero-width, bidi) but \\n and \\t",
    )
    html: bool = Field(default=False, description="HTML to plain text")
    fullwidth: bool = Field(
        default=True,
        description="full-width ASCII and U+3000 to half-width; keeps ！（），：；？",
    )
    chinese: Literal["none", "t2s", "s2t"] = Field(
        default="none", description="traditional → simplified (t2s) or back (s2t)"
    )


class CleanStep:
    """Rewrites ``context.text``. The decision details hold ``removed_chars``, how much
    shorter the text became (never any of its content)."""

    name = "clean"

    def __init__(self, options: CleanOptions) -> None:
        self._options = options
        self._converter: OpenCC | None = (
            OpenCC(options.chinese) if options.chinese != "none" else None
        )

    def run(self, context: FlowContext) -> None:
        original = context.text
        text = clean_text(original, self._options, self._converter)
        context.decision_details = {"removed_chars": max(0, len(original) - len(text))}
        if text != original:
            context.text = text
            context.decision = "changed"
        else:
            context.decision = "pass"


def clean_text(text: str, options: CleanOptions, converter: OpenCC | None = None) -> str:
    """``text`` cleaned as ``options`` say; ``converter`` is needed for ``chinese``."""
    if options.html and ("<" in text or "&" in text):
        text = html_to_text(text)
    if options.fullwidth and not text.isascii() and _WIDE.search(text):
        text = _to_halfwidth(text)
    if options.control or options.whitespace:
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        if not _printable(text):
            text = _LINE_BREAK.sub("\n", text)
            if options.control:
                text = _remove_invisible(text)
    if options.chinese != "none":
        if converter is None:
            raise ValueError("chinese conversion needs an OpenCC converter")
        if _HAN.search(text):
            text = str(converter.convert(text))
    if options.whitespace:
        text = _tidy_whitespace(text)
    return text


def _printable(text: str) -> bool:
    """No characters but printable ones, spaces, ``\\n`` and ``\\t``: nothing to remove."""
    return text.replace("\n", "").replace("\t", "").isprintable()


def _to_halfwidth(text: str) -> str:
    # Only the runs are translated: translate() over a whole CJK text is slower than the
    # split, and a callback per match slower still.
    parts = _WIDE.split(text)
    parts[1::2] = [run.translate(_WIDTH) for run in parts[1::2]]
    return "".join(parts)


def _remove_invisible(text: str) -> str:
    text = _INVISIBLE.sub("", text)
    if _ZWJ in text:
        text = _STRAY_ZWJ.sub("", text)
    return text


def _tidy_whitespace(text: str) -> str:
    if "```" not in text and "~~~" not in text:
        return _tidy_prose(text).strip(" \n")
    parts: list[str] = []
    done = 0
    for fence in _FENCE.finditer(text):
        parts += (_tidy_prose(text[done : fence.start()]), fence.group())
        done = fence.end()
    parts.append(_tidy_prose(text[done:]))
    # Only the prose at either end is trimmed: a fence keeps its indentation.
    parts[0] = parts[0].lstrip(" \n")
    parts[-1] = parts[-1].rstrip(" \n")
    return "".join(parts)


def _tidy_prose(text: str) -> str:
    # Text with only ASCII whitespace needs no regex unless it has a tab or two spaces.
    if "\t" in text or "  " in text or not (text.isascii() or _printable(text)):
        text = _RUN.sub(" ", text)
    if " \n" in text:
        text = text.replace(" \n", "\n")
    if "\n " in text:
        text = text.replace("\n ", "\n")
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text


_SKIPPED = frozenset({"script", "style", "template"})
_PARAGRAPHS = frozenset(
    {"p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "ul", "ol", "dl", "table"}
    | {"hr", "figure", "section", "article", "header", "footer", "main", "aside", "nav"}
)
_LINES = frozenset(
    {"br", "div", "li", "dt", "dd", "tr", "caption", "address", "details", "summary"}
    | {"dialog", "fieldset", "legend", "figcaption", "form", "hgroup", "option", "title"}
)
_CELLS = frozenset({"td", "th"})
_HTML_SPACE = re.compile("[ \t\n\r\f]+")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._pre = 0
        self._breaks = 2
        """Line breaks at the end of the output so far (the start counts as a paragraph)."""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._open_or_close(tag, +1)

    def handle_endtag(self, tag: str) -> None:
        self._open_or_close(tag, -1)

    def _open_or_close(self, tag: str, step: int) -> None:
        if tag in _SKIPPED:
            self._skip = max(0, self._skip + step)
        elif tag == "br":
            self.parts.append("\n")
            self._breaks += 1
        elif tag in _PARAGRAPHS:
            self._break(2)  # before entering or leaving pre: spaces ending a pre stay
            if tag == "pre":
                self._pre = max(0, self._pre + step)
        elif tag in _LINES:
            self._break(1)
        elif tag in _CELLS and step < 0:
            self.parts.append(" ")

    def _break(self, count: int) -> None:
        if self._breaks < count:
            if self.parts and not self._pre:
                self.parts[-1] = self.parts[-1].rstrip(" ")
            self.parts.append("\n" * (count - self._breaks))
            self._breaks = count

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if not self._pre:
            data = _HTML_SPACE.sub(" ", data)
            if self._breaks:
                data = data.lstrip(" ")  # source indentation at the start of a line
        if data:
            self.parts.append(data)
            self._breaks = 0


def html_to_text(html: str) -> str:
    """The text a reader sees in ``html``, with block boundaries as line breaks."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    return "".join(extractor.parts).strip("\n")


CLEAN = StepType(
    name="clean",
    options=CleanOptions,
    build=CleanStep,
    description="tidy whitespace, invisible characters, HTML, full-width forms, 繁简",
)
