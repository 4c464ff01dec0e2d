r"""Sensitive-term lexicons and matching, for the ``terms`` step (``term_filter.py``).

China's generative-AI rules ask providers for keyword libraries (10,000 terms and more,
over risk categories, updated weekly). A lexicon, as YAML or as a mapping::

    version: "2026-11-25"
    categories:
      violence: {action: block, terms: [制造炸弹, pipe bomb]}
      profanity: {action: mask, terms: [傻逼, fuck]}
      gambling: {action: flag, terms: [网络赌博, online casino]}

``block`` refuses the request; ``mask`` overwrites each match with ``mask_with``, one
character per original character, so the text keeps its length; ``flag`` adds the
category to ``context.flags``. A term under several categories belongs to the strictest
(block, mask, flag; on a tie the first listed).

Matching is one Aho-Corasick pass over a folded copy of the text; each match is mapped
back to the original, from its first to its last character (and the combining marks on
that one). The text and the terms are folded alike: compatibility forms and width (NFKD:
``Ｆａｌｕｎ``, ``ⓕⓐⓛⓤⓝ`` and ``𝐟𝐚𝐥𝐮𝐧`` read ``falun``), case (casefold), diacritics
(``Fǎlún`` reads ``falun``); and whatever is not a letter or a digit is dropped (spaces,
punctuation, symbols, emoji, zero-width and other format characters), so ``法 轮-功`` and
``f.a.l.u.n`` match.

Since dropping spaces runs English words together (``an Al`` reads ``anal``), a term that
folds to ASCII letters and digits only is a *word term*, with two rules:

1. it starts and ends on a word boundary: the character next to the match is not an ASCII
   letter or digit, or a visible separator (whitespace, punctuation, a symbol; not a
   zero-width character) comes between: ``ass`` is found neither in ``class`` nor in
   ``cl\u200bass``; next to Chinese characters, ``我爱falun功``, it is;
2. whitespace inside the match only where the term has a separator itself (``falun gong``
   matches ``Falun Gong`` and ``falungong``) or between single characters (``f a l u n``):
   ``fa lun`` does not match ``falun``. Punctuation and zero-width characters are allowed
   anywhere inside (``fa-lun``, ``fa\u200blun``).

Other terms (Chinese, mixed scripts) match anywhere. Of overlapping matches the longest
(in folded characters) is kept, then the earliest; the actions are those of the kept ones.

1 KB against 10,000 terms takes 10-30 µs; more (~90 µs) when dozens of short English
terms turn up inside words and need the rules above. `LexiconFile` re-reads a changed
file and keeps serving the previous version while the new one is invalid.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from bisect import bisect_right, insort
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import Annotated, Any

import ahocorasick  # type: ignore[import-not-found]
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from inhouse.errors import InvalidRequestError

log = logging.getLogger(__name__)

# --- folding ---------------------------------------------------------------------------

# ASCII in one translate(): letters to lower case, separators to spaces.
_ASCII_SPACED = bytes(ord(chr(c).lower()) if chr(c).isalnum() else 0x20 for c in range(256))
# What lower() does not fold: all but spaces, lower-case ASCII, digits, CJK ideographs.
_FOLDABLE = re.compile("[^ 0-9a-z\u3400-\u4dbf\u4e00-\u9fff]+")
_SUSPECT = re.compile("[^\x00-\x7f\u3400-\u4dbf\u4e00-\u9fff]+")
_ALNUM_RUN = re.compile(r"[^\W_]+")
_WHITESPACE = re.compile(r"\s")
_LEADS = bytes(0 if 0x80 <= b < 0xC0 else 1 for b in range(256))  # UTF-8 continuation: 0
_NONE, _INVISIBLE, _VISIBLE, _SPACE = 0, 1, 2, 3  # what separates two folded characters


@lru_cache(maxsize=8192)
def _fold_char(char: str) -> str:
    """One character folded: compatibility-decomposed, casefolded, marks and separators
    dropped, recomposed (so Hangul syllables stay syllables)."""
    decomposed = unicodedata.normalize("NFKD", char).casefold()
    return unicodedata.normalize("NFKC", "".join(c for c in decomposed if c.isalnum()))


def _gap_kind(gap: str) -> int:
    kind = _INVISIBLE if gap else _NONE
    for char in gap:
        if char.isspace():
            return _SPACE
        if unicodedata.category(char)[0] not in "CM":
            kind = _VISIBLE
    return kind


class _Folded:
    """A text, its folded copy (``norm``) and the way back to original positions:
    ``spaced`` (the text folded, each dropped character a space) or an explicit map."""

    __slots__ = ("_gaps", "_origin", "_spaced", "_starts", "norm", "text")

    def __init__(
        self, text: str, norm: str, *, spaced: str = "", origin: list[int] | None = None
    ) -> None:
        self.text = text
        self.norm = norm
        self._spaced = spaced
        self._origin = origin
        self._starts: list[int] = []
        self._gaps: dict[int, int] = {}

    def origin(self, index: int) -> int:
        """The original position of ``norm[index]``."""
        if self._origin is not None:
            return self._origin[index]
        if not self._starts:  # on the first match only: where each piece begins in norm
            self._starts = list(accumulate(map(len, self._spaced.split(" ")), initial=0))
        return index + bisect_right(self._starts, index) - 1  # plus one space per piece

    def gap(self, index: int) -> int:
        """What the original has between ``norm[index - 1]`` and ``norm[index]``."""
        kind = self._gaps.get(index)
        if kind is None:
            kind = _gap_kind(self.text[self.origin(index - 1) + 1 : self.origin(index)])
            self._gaps[index] = kind
        return kind


def _fold(text: str) -> _Folded:
    if text.isascii():
        spaced = text.encode("ascii").translate(_ASCII_SPACED).decode("ascii")
        return _Folded(text, spaced.replace(" ", ""), spaced=spaced)
    spaced = text.lower()
    if len(spaced) == len(text):
        # What lower() leaves (full-width forms, accents, punctuation ...) is folded by a
        # table of its distinct characters, if each folds to one character or none.
        changes = {
            c: f or " "
            for c in set("".join(_FOLDABLE.findall(spaced)))
            if (f := _fold_char(c)) != c
        }
        if all(len(folded) == 1 for folded in changes.values()):
            if len(changes) > 32:
                spaced = spaced.translate({ord(c): f for c, f in changes.items()})
            else:  # a C-level scan each, much faster than translate() over CJK text
                for char, folded in changes.items():
                    spaced = spaced.replace(char, folded)
            return _Folded(text, spaced.replace(" ", ""), spaced=spaced)
    return _fold_slowly(text)


def _fold_slowly(text: str) -> _Folded:
    """Character by character where needed, with an explicit position map (for the
    characters that fold to several: ß, ligatures, ⑽ ...)."""
    parts: list[str] = []
    origin: list[int] = []

    def simple(start: int, end: int) -> None:  # ASCII and CJK ideographs
        for run in _ALNUM_RUN.finditer(text, start, end):
            parts.append(run.group().lower())
            origin.extend(range(run.start(), run.end()))

    done = 0
    for run in _SUSPECT.finditer(text):
        simple(done, run.start())
        for index in range(run.start(), run.end()):
            piece = _fold_char(text[index])
            if piece:
                parts.append(piece)
                origin.extend([index] * len(piece))
        done = run.end()
    simple(done, len(text))
    return _Folded(text, "".join(parts), origin=origin)


def _is_word_char(char: str) -> bool:
    return char.isascii() and char.isalnum()


# --- lexicons --------------------------------------------------------------------------


class TermAction(StrEnum):
    BLOCK = "block"
    MASK = "mask"
    FLAG = "flag"


_STRICTNESS = {TermAction.BLOCK: 0, TermAction.MASK: 1, TermAction.FLAG: 2}

CategoryName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]


class CategorySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action: TermAction
    terms: list[str] = Field(min_length=1)

    @field_validator("terms")
    @classmethod
    def _terms_have_letters(cls, terms: list[str]) -> list[str]:
        for index, term in enumerate(terms):
            if not _fold(term).norm:
                raise ValueError(f"term {index} has no letters or digits")
        return terms


class LexiconSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str = Field(min_length=1)
    categories: dict[CategoryName, CategorySpec] = Field(min_length=1)

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: object) -> object:
        # YAML reads an unquoted 2026-11-25 as a date and 3 as a number.
        if isinstance(value, date | int | float) and not isinstance(value, bool):
            return value.isoformat() if isinstance(value, date) else str(value)
        return value


@dataclass(frozen=True, slots=True)
class TermMatch:
    """One match; ``start``/``end`` index the original text. The term is not kept."""

    category: str
    action: TermAction
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class _Entry:
    category: str
    action: TermAction
    word: bool
    breaks: frozenset[int]
    """Folded positions where the term itself has a separator (word terms only)."""


# (start, end, entry) in folded positions
_Candidate = tuple[int, int, _Entry]


class Lexicon:
    """A validated lexicon with its automaton, built once; `find` is safe to share."""

    def __init__(self, spec: LexiconSpec) -> None:
        self.version = spec.version
        entries: dict[str, _Entry] = {}
        for name, category in spec.categories.items():
            for term in category.terms:
                folded = _fold(term)
                key = folded.norm
                breaks = frozenset(b for b in range(1, len(key)) if folded.gap(b) >= _VISIBLE)
                entry = _Entry(name, category.action, key.isascii(), breaks)
                known = entries.get(key)
                if known is None or _STRICTNESS[entry.action] < _STRICTNESS[known.action]:
                    entries[key] = entry
                elif known.category == name:
                    entries[key] = _Entry(name, known.action, known.word, known.breaks | breaks)
        self.term_count = len(entries)
        # Over UTF-8 bytes (as Latin-1): pyahocorasick scans a node's children one by one,
        # and a Chinese lexicon has thousands of first characters but a few first bytes
        # (20 times faster). UTF-8 matches start and end on character boundaries.
        self._automaton: Any = ahocorasick.Automaton()
        for key, entry in entries.items():
            encoded = key.encode("utf-8")
            self._automaton.add_word(encoded.decode("latin-1"), (len(encoded), len(key), entry))
        self._automaton.make_automaton()

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "lexicon") -> Lexicon:
        """Validate ``data`` (``version`` and ``categories``); `InvalidRequestError` if bad."""
        try:
            spec = LexiconSpec.model_validate(data)
        except ValidationError as exc:
            raise InvalidRequestError(f"{source}: {_describe(exc)}", param="lexicon") from None
        return cls(spec)

    def find(self, text: str) -> list[TermMatch]:
        """The matches in ``text``, in order and without overlaps."""
        folded = _fold(text)
        if not folded.norm:
            return []
        encoded = folded.norm.encode("utf-8")
        hits = list(self._automaton.iter(encoded.decode("latin-1")))
        # Bytes → characters: count the bytes that begin one (a table for many hits).
        leads = b"" if len(encoded) == len(folded.norm) else encoded.translate(_LEADS)
        table = list(accumulate(leads, initial=0)) if len(hits) > 16 and leads else []
        candidates: list[_Candidate] = []
        for last, (size, length, entry) in hits:
            start = last + 1 - size
            if table:
                start = table[start]
            elif leads:
                start = leads.count(1, 0, start)
            end = start + length
            if not entry.word or _word_match(folded, start, end, entry.breaks):
                candidates.append((start, end, entry))
        matches: list[TermMatch] = []
        done = 0
        for start, end, entry in _longest_first(candidates):
            first, last = folded.origin(start), folded.origin(end - 1) + 1
            if first < done:  # two matches inside one expanded character: keep the first
                continue
            while last < len(text) and unicodedata.category(text[last])[0] == "M":
                last += 1
            matches.append(TermMatch(entry.category, entry.action, first, last))
            done = last
        return matches


def _word_match(folded: _Folded, start: int, end: int, breaks: frozenset[int]) -> bool:
    """The two rules for word terms (see the module's docstring)."""
    norm = folded.norm
    if start > 0 and _is_word_char(norm[start - 1]) and folded.gap(start) < _VISIBLE:
        return False
    if end < len(norm) and _is_word_char(norm[end]) and folded.gap(end) < _VISIBLE:
        return False
    first, last = folded.origin(start), folded.origin(end - 1)
    if not _WHITESPACE.search(folded.text, first, last):
        return True
    cuts = [i for i in range(start + 1, end) if folded.gap(i) == _SPACE]
    bounds = [start, *cuts, end]
    for k, cut in enumerate(cuts, 1):
        spelled_out = bounds[k] - bounds[k - 1] == 1 and bounds[k + 1] - bounds[k] == 1
        if cut - start not in breaks and not spelled_out:
            return False
    return True


def _longest_first(candidates: Iterable[_Candidate]) -> list[_Candidate]:
    """Non-overlapping candidates, the longest first, then the earliest; in text order."""
    kept: list[_Candidate] = []
    for cand in sorted(candidates, key=lambda c: (c[0] - c[1], c[0])):
        i = bisect_right(kept, cand[0], key=lambda c: c[0])
        if not (i and kept[i - 1][1] > cand[0]) and not (i < len(kept) and kept[i][0] < cand[1]):
            insort(kept, cand, key=lambda c: c[0])
    return kept


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'lexicon'}: {error['msg']}"
        for error in exc.errors(include_url=False)
    )


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml_problem(exc: UnicodeDecodeError | yaml.YAMLError) -> str:
    """Where and what, without quoting the file (a wrong path must not leak a file)."""
    if isinstance(exc, yaml.MarkedYAMLError) and (mark := exc.problem_mark) is not None:
        return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    return "not UTF-8" if isinstance(exc, UnicodeDecodeError) else "invalid YAML"


def load_lexicon(path: str | Path) -> Lexicon:
    """Read and validate a YAML lexicon; `InvalidRequestError` says what is wrong."""
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    except OSError as exc:
        raise InvalidRequestError(
            f"lexicon {path}: cannot read ({exc.strerror})", param="lexicon"
        ) from None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidRequestError(
            f"lexicon {path}: {_yaml_problem(exc)}", param="lexicon"
        ) from None
    if not isinstance(data, Mapping):
        raise InvalidRequestError(f"lexicon {path}: expected a mapping", param="lexicon")
    return Lexicon.from_mapping(data, source=f"lexicon {path}")


_Signature = tuple[int, int, int]


class LexiconFile:
    """A lexicon file that is re-read when it changes.

    `current` checks the file's modification time, size and inode at most every
    ``reload_seconds`` (by ``clock``) and loads it again when they change. An invalid new
    file is logged once and the previous version stays in service; so does a file that
    disappears. Only the first load raises. Swapping versions is one assignment, so
    threads may share an instance.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        reload_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self._reload_seconds = reload_seconds
        self._clock = clock
        signature = self._stat()
        if signature is None:
            raise InvalidRequestError(f"lexicon {self.path}: no such file", param="lexicon")
        self._lexicon = load_lexicon(self.path)
        self._seen: _Signature | None = signature
        self._checked = clock()

    @property
    def version(self) -> str:
        """The version in service."""
        return self._lexicon.version

    def current(self) -> Lexicon:
        now = self._clock()
        if now - self._checked >= self._reload_seconds:
            self._checked = now
            self._reload_if_changed()
        return self._lexicon

    def _stat(self) -> _Signature | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _reload_if_changed(self) -> None:
        signature = self._stat()
        if signature == self._seen:
            return
        self._seen = signature  # a bad version is reported once, not at every check
        if signature is None:
            log.warning("lexicon %s is gone; serving version %s", self.path, self.version)
            return
        try:
            lexicon = load_lexicon(self.path)
        except InvalidRequestError as exc:
            log.error("%s; still serving version %s", exc.message, self.version)
            return
        log.info("lexicon %s: version %s replaces %s", self.path, lexicon.version, self.version)
        self._lexicon = lexicon
