"""PII detection and reversible masking, before a prompt reaches a model.

Detection runs on a normalised copy (NFKC, so full-width digits read as ASCII; zero-width
characters dropped) and each span is mapped back, so masking replaces exactly what the
user wrote. Numbers may have single spaces or hyphens between digits (``1380 0138 000``)
and touch CJK characters. Checksums decide, not shapes: an ID number with a wrong MOD 11-2
check character or an impossible birth date is not PII, nor is a card number failing Luhn;
an ID-shaped number with a wrong check character is not taken for a card either (it is a
mistyped ID). Overlaps: the longer finding wins; on equal spans a custom pattern, then
ID_CARD, PASSPORT, EMAIL, IP, PHONE, BANK_CARD. A run of digits that is nothing as a whole
is tried group by group, so two numbers separated by one space are both found.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from itertools import accumulate
from types import MappingProxyType

from inhouse.errors import InvalidRequestError
from inhouse.flows.safe_regex import SafePattern, compile_pattern


class PiiKind(StrEnum):
    """Built-in detectors, in the order that breaks ties between equal spans."""

    ID_CARD = "ID_CARD"
    PASSPORT = "PASSPORT"
    EMAIL = "EMAIL"
    IP = "IP"
    """IPv4 and IPv6."""
    PHONE = "PHONE"
    """Mainland mobile numbers and landlines."""
    BANK_CARD = "BANK_CARD"


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of PII; ``start``/``end`` index the original text, ``value`` is its slice."""

    kind: str
    """A `PiiKind`, or the caller's name for a custom pattern."""
    start: int
    end: int
    value: str


@dataclass(frozen=True, slots=True)
class Masked:
    text: str
    mapping: Mapping[str, str]
    """Placeholder (``[PHONE_1]``) → the original it replaced."""
    findings: tuple[Finding, ...]


_SEPARATORS = " -\u2010\u2011\u2012\u2013\u2014\u2015\u2212"
_SEP = f"[{re.escape(_SEPARATORS)}]"
# A run of ten or more digits with single separators, an optional leading + and trailing
# X. Not next to another digit, and not part of a decimal or dotted number ("3.14").
# Patterns start with a character class, not a lookbehind: re then skips quickly to the
# positions where a match can begin, which more than halves the scan time.
_NUMBER = re.compile(
    rf"[+0-9](?<![0-9][+0-9])(?<![0-9]\.[+0-9])(?:{_SEP}?[0-9]){{9,}}(?:{_SEP}?[Xx])?"
    r"(?![0-9])(?!\.[0-9])"
)
_GROUP = re.compile(r"[0-9Xx]+")
_DROP = str.maketrans("", "", _SEPARATORS + "+")
_MOBILE = re.compile(r"1[3-9][0-9]{9}")
_LANDLINE = re.compile(r"0(?:10|2[0-9]|[3-9][0-9]{2})[2-9][0-9]{6,7}")
_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}"
)
_IPV4 = re.compile(r"[0-9](?<![0-9.][0-9])[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?![0-9])(?!\.[0-9])")
_IPV6 = re.compile(
    r"(?<![0-9A-Za-z:.])(?=[0-9A-Fa-f]*:[0-9A-Fa-f]*:)[0-9A-Fa-f:]{3,39}(?![0-9A-Za-z:])(?!\.[0-9])"
)
_PASSPORT = re.compile(
    r"[EGeg](?<![0-9A-Za-z][EGeg])(?:[0-9]{8}|(?<=[Ee])[A-HJ-NP-Za-hj-np-z][0-9]{7})(?![0-9A-Za-z])"
)
_PLACEHOLDER = re.compile(r"\[[A-Z][A-Z0-9_]*_[0-9]+\]")
_CUSTOM_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")

# Full-width ASCII and the ideographic space, mapped without changing the length: the
# common case in Chinese text, which then needs no index map at all. Only the runs of
# such characters are translated: translate() over a whole CJK text is three times slower.
_WIDTH = {0xFF01 + i: 0x21 + i for i in range(94)} | {0x3000: 0x20}
_WIDE = re.compile("[\uff01-\uff5e\u3000]+")
_INVISIBLE = "\u00ad\u200b\u200c\u200d\u2060\ufeff"  # soft hyphen, zero-width characters
_INVISIBLE_RE = re.compile(f"[{_INVISIBLE}]")
# Runs that may change under NFKC: everything but ASCII and CJK unified ideographs.
_SUSPECT = re.compile(r"[^\x00-\x7f\u3400-\u4dbf\u4e00-\u9fff]+")

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_PROVINCES = frozenset(map(str, (*range(11, 16), *range(21, 24), *range(31, 38), *range(41, 47))))
_REGIONS = frozenset(map(str, (*range(50, 55), *range(61, 66), 71, 81, 82, 83))) | _PROVINCES
_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)
_ALL_KINDS = frozenset(PiiKind)
_NUMERIC = frozenset({PiiKind.ID_CARD, PiiKind.PHONE, PiiKind.BANK_CARD})
_RANK = {kind: rank for rank, kind in enumerate(PiiKind)}
_OTHERS = (
    (PiiKind.EMAIL, _EMAIL, "@"),
    (PiiKind.PASSPORT, _PASSPORT, ""),
    (PiiKind.IP, _IPV4, "."),
    (PiiKind.IP, _IPV6, ":"),
)

# (start, end, kind, rank), in normalised coordinates.
_Candidate = tuple[int, int, str, int]


def _normalise(text: str) -> tuple[str, list[int] | None]:
    """The text to detect on, and for each of its positions the original position.

    ``None`` as the map means positions are unchanged, which is the case for ASCII and
    for ordinary Chinese text with full-width punctuation and digits.
    """
    folded = _WIDE.sub(lambda m: m.group().translate(_WIDTH), text)
    if folded.isascii() or (
        unicodedata.is_normalized("NFKC", folded) and _INVISIBLE_RE.search(folded) is None
    ):
        return folded, None
    parts: list[str] = []
    origin: list[int] = []
    done = 0
    for run in _SUSPECT.finditer(folded):
        chunk = run.group()
        if unicodedata.is_normalized("NFKC", chunk) and _INVISIBLE_RE.search(chunk) is None:
            continue
        parts.append(folded[done : run.start()])
        origin.extend(range(done, run.start()))
        for index, char in enumerate(chunk, run.start()):
            piece = "" if char in _INVISIBLE else unicodedata.normalize("NFKC", char)
            parts.append(piece)
            origin.extend([index] * len(piece))
        done = run.end()
    parts.append(folded[done:])
    origin.extend(range(done, len(folded)))
    origin.append(len(folded))
    return "".join(parts), origin


def _id_shaped(digits: str) -> bool:
    """A region code and a real birth date (X can only come last, so the rest are digits)."""
    if digits[:2] not in _REGIONS or not 1900 <= int(digits[6:10]) <= 2099:
        return False
    try:
        date(int(digits[6:10]), int(digits[10:12]), int(digits[12:14]))
    except ValueError:
        return False
    return True


def _id_checksum_ok(digits: str) -> bool:
    total = sum((ord(d) - 48) * w for d, w in zip(digits, _ID_WEIGHTS, strict=False))
    return _ID_CHECK[total % 11] == digits[17]


def _luhn_ok(digits: str) -> bool:
    odd = sum(ord(d) - 48 for d in digits[-1::-2])
    even = sum(_LUHN_DOUBLE[ord(d) - 48] for d in digits[-2::-2])
    return (odd + even) % 10 == 0


def _classify(digits: str, plus: bool) -> PiiKind | None:
    """What a number is, given its digits (and a final X) and whether it began with +."""
    if len(digits) == 18 and _id_shaped(digits):
        return PiiKind.ID_CARD if not plus and _id_checksum_ok(digits) else None
    if digits[-1] == "X":
        return None
    if plus:
        return PiiKind.PHONE if digits[:2] == "86" and _MOBILE.fullmatch(digits, 2) else None
    if (
        _MOBILE.fullmatch(digits)
        or (digits[:2] == "86" and _MOBILE.fullmatch(digits, 2))
        or (digits[:4] == "0086" and _MOBILE.fullmatch(digits, 4))
        or _LANDLINE.fullmatch(digits)
    ):
        return PiiKind.PHONE
    if 13 <= len(digits) <= 19 and digits[0] != "0" and _luhn_ok(digits):
        return PiiKind.BANK_CARD
    return None


def _numbers(norm: str, start: int, end: int) -> Iterator[tuple[int, int, PiiKind]]:
    """PII in one run: the whole run, else the longest matches of its separated groups."""
    plus = norm[start] == "+"
    digits = norm[start:end].translate(_DROP).upper()
    kind = _classify(digits, plus)
    if kind is not None:
        yield start, end, kind
        return
    groups = [(m.start(), m.end()) for m in _GROUP.finditer(norm, start, end)]
    # offsets[k]: where group k starts in `digits`; a window of groups i..k-1 is a
    # candidate when it holds 10 to 19 digits (the shortest landline, the longest card).
    offsets = list(accumulate((e - s for s, e in groups), initial=0))
    i = 0
    while i < len(groups):
        first = bisect_left(offsets, offsets[i] + 10)
        for k in range(bisect_right(offsets, offsets[i] + 19) - 1, max(first, i + 1) - 1, -1):
            if k - i == len(groups):
                continue  # the whole run: already tried
            kind = _classify(digits[offsets[i] : offsets[k]], plus and i == 0)
            if kind is not None:
                yield (start if i == 0 else groups[i][0]), groups[k - 1][1], kind
                i = k
                break
        else:
            i += 1


def _custom_patterns(
    custom: Mapping[str, str | SafePattern] | None,
) -> list[tuple[str, SafePattern]]:
    """A tenant's patterns, compiled for RE2 (linear-time matching, ``safe_regex``)."""
    compiled: list[tuple[str, SafePattern]] = []
    for name, pattern in (custom or {}).items():
        if not _CUSTOM_NAME.fullmatch(name):
            raise InvalidRequestError(f"invalid custom PII name {name!r}", param="custom")
        if isinstance(pattern, str):
            pattern = compile_pattern(pattern, where=f"custom.{name}")
        compiled.append((name, pattern))
    return compiled


def _candidates(
    norm: str, wanted: frozenset[PiiKind], custom: list[tuple[str, SafePattern]]
) -> Iterator[_Candidate]:
    if wanted & _NUMERIC:
        for run in _NUMBER.finditer(norm):
            for start, end, kind in _numbers(norm, run.start(), run.end()):
                if kind in wanted:
                    yield start, end, kind, _RANK[kind]
    # Each pattern only runs when the character it cannot do without is in the text.
    for kind, pattern, needs in _OTHERS:
        if kind in wanted and needs in norm:
            for m in pattern.finditer(norm):
                if kind is not PiiKind.IP or _is_ip(m.group()):
                    yield m.start(), m.end(), kind, _RANK[kind]
    for name, safe in custom:
        for found in safe.finditer(norm):
            if found.end() > found.start():
                yield found.start(), found.end(), name, -1  # custom patterns win ties


def _is_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:  # an octet over 255, a leading zero, a malformed IPv6 address
        return False
    return True


def _resolve(candidates: Iterable[_Candidate]) -> list[_Candidate]:
    """Non-overlapping candidates, longest first, then by rank; returned in text order."""
    kept: list[_Candidate] = []
    for cand in sorted(candidates, key=lambda c: (c[0] - c[1], c[3], c[0])):
        i = bisect_right(kept, cand[0], key=lambda c: c[0])
        if not (i and kept[i - 1][1] > cand[0]) and not (i < len(kept) and kept[i][0] < cand[1]):
            kept.insert(i, cand)
    return kept


def detect(
    text: str,
    *,
    kinds: Iterable[PiiKind] | None = None,
    custom: Mapping[str, str | SafePattern] | None = None,
) -> list[Finding]:
    """PII in ``text``, in order and without overlaps.

    ``kinds`` limits the built-in detectors (default: all); ``custom`` adds patterns by
    name, matched against the normalised text (so ``EMP-\\d{6}`` also finds it written
    in full-width characters). A malformed custom name or pattern raises
    `InvalidRequestError`.
    """
    patterns = _custom_patterns(custom)
    wanted = _ALL_KINDS if kinds is None else frozenset(kinds)
    norm, origin = _normalise(text)
    findings: list[Finding] = []
    last_end = 0
    for start, end, kind, _ in _resolve(_candidates(norm, wanted, patterns)):
        if origin is not None:
            start, end = origin[start], origin[end - 1] + 1
        if start < last_end:  # two findings inside one expanded character: keep the first
            continue
        findings.append(Finding(kind, start, end, text[start:end]))
        last_end = end
    return findings


def mask(
    text: str,
    *,
    kinds: Iterable[PiiKind] | None = None,
    custom: Mapping[str, str | SafePattern] | None = None,
    taken: Collection[str] = (),
) -> Masked:
    """``text`` with each finding replaced by a placeholder such as ``[PHONE_1]``.

    The same original value gets the same placeholder throughout the text. Numbering
    skips placeholders the text already contains, so `restore` gives back the input, and
    those in ``taken`` (given out for another text of the same request).
    """
    findings = detect(text, kinds=kinds, custom=custom)
    parts: list[str] = []
    mapping: dict[str, str] = {}
    assigned: dict[tuple[str, str], str] = {}
    counters: dict[str, int] = {}
    done = 0
    for finding in findings:
        label = finding.kind.upper()
        placeholder = assigned.get((label, finding.value))
        if placeholder is None:
            number = counters.get(label, 0) + 1
            while f"[{label}_{number}]" in text or f"[{label}_{number}]" in taken:
                number += 1
            counters[label] = number
            placeholder = f"[{label}_{number}]"
            assigned[label, finding.value] = placeholder
            mapping[placeholder] = finding.value
        parts += (text[done : finding.start], placeholder)
        done = finding.end
    parts.append(text[done:])
    return Masked("".join(parts), MappingProxyType(mapping), tuple(findings))


def restore(text: str, mapping: Mapping[str, str]) -> str:
    """Put the originals back for every placeholder in ``mapping``; others stay as written."""
    return _PLACEHOLDER.sub(lambda m: mapping.get(m.group(), m.group()), text)
