"""Sensitive terms: adversarial spellings are caught, English words are not run together,
actions do what they say, lexicons validate and reload, and no term leaks."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from inhouse.errors import InvalidRequestError
from inhouse.flows.context import Block, FlowContext, Stage
from inhouse.flows.step_registry import StepRegistry
from inhouse.flows.term_filter import (
    DEFAULT_REFUSAL,
    TERM_FILTER,
    TermFilterOptions,
    TermFilterStep,
    mask_matches,
)
from inhouse.flows.terms import (
    Lexicon,
    LexiconFile,
    TermAction,
    TermMatch,
    _fold,
    _fold_slowly,
    load_lexicon,
)

SAMPLE = Path(__file__).parents[2] / "data" / "lexicon-sample.yaml"

CATEGORIES: dict[str, Any] = {
    "cult": {"action": "block", "terms": ["法轮功", "falun gong", "falun"]},
    "violence": {"action": "block", "terms": ["制造炸弹", "pipe bomb"]},
    "profanity": {"action": "mask", "terms": ["傻逼", "他妈的", "fuck", "ass", "anal"]},
    "gambling": {"action": "flag", "terms": ["网络赌博", "百家乐", "online casino"]},
}
LEXICON = Lexicon.from_mapping({"version": "2026-11-25", "categories": CATEGORIES})


def found(text: str, lexicon: Lexicon = LEXICON) -> list[tuple[str, str]]:
    """(category, the original text matched) for each match."""
    return [(m.category, text[m.start : m.end]) for m in lexicon.find(text)]


def run(step: TermFilterStep, text: str) -> FlowContext:
    context = FlowContext(text=text)
    step.run(context)
    return context


def inline_step(**options: Any) -> TermFilterStep:
    return TermFilterStep(TermFilterOptions(terms=CATEGORIES, **options))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_lexicon(path: Path, version: str, terms: list[str], *, mtime: int) -> None:
    """Write a one-category lexicon and give it a distinct modification time."""
    quoted = ", ".join(f'"{term}"' for term in terms)
    path.write_text(
        f'version: "{version}"\ncategories:\n  banned: {{action: block, terms: [{quoted}]}}\n',
        encoding="utf-8",
    )
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))


# --- adversarial spellings ----------------------------------------------------------------


@pytest.mark.parametrize(
    "written",
    [
        "法轮功",
        "法 轮 功",
        "法 轮-功",
        "法\u200b轮\u200b功",  # zero-width spaces
        "法\u200d轮\ufeff功",  # zero-width joiner, BOM
        "法·轮·功",
        "法\u3000轮\u3000功",  # ideographic spaces
        "【法】【轮】【功】",
        "法🔥轮🔥功",
        "法\n轮\n功",
    ],
)
def test_chinese_term_broken_up_is_found_with_its_exact_span(written: str) -> None:
    text = f"请介绍一下{written}的历史。"
    assert found(text) == [("cult", written.strip("【】"))]


@pytest.mark.parametrize(
    "written",
    [
        "falun",
        "FaLuN",
        "FALUN",
        "f.a.l.u.n",
        "f a l u n",
        "F-A-L-U-N",
        "fa\u200blun",
        "fa-lun",
        "Ｆａｌｕｎ",  # full-width
        "ｆ ａ ｌ ｕ ｎ",
        "ⓕⓐⓛⓤⓝ",  # circled
        "𝐟𝐚𝐥𝐮𝐧",  # mathematical bold
        "Fǎlún",  # pinyin tone marks
        "Fa\u0301lun",  # a decomposed accent
    ],
)
def test_english_term_disguised_is_found(written: str) -> None:
    text = f"Tell me about {written} please"
    assert found(text) == [("cult", written)]


def test_phrase_term_matches_with_or_without_its_own_space() -> None:
    for written in ("Falun Gong", "falungong", "FALUN\tGONG", "falun-gong", "Falun  Gong"):
        assert found(f"What is {written}?") == [("cult", written)], written


def test_ascii_term_next_to_chinese_characters_is_found() -> None:
    assert found("我爱falun功") == [("cult", "falun")]
    assert found("练习Falun Gong的人") == [("cult", "Falun Gong")]


def test_mixed_chinese_and_english_text_finds_every_category_in_order() -> None:
    text = "他在网上搞网 络 赌 博，还说 F*U*C*K，最后谈起 Falun Gong 和 制造炸弹。"
    assert found(text) == [
        ("gambling", "网 络 赌 博"),
        ("profanity", "F*U*C*K"),
        ("cult", "Falun Gong"),
        ("violence", "制造炸弹"),
    ]


def test_characters_that_fold_to_several_keep_exact_spans() -> None:
    lexicon = Lexicon.from_mapping(
        {"version": "1", "categories": {"x": {"action": "mask", "terms": ["fish", "strasse"]}}}
    )
    text = "Die Straße hat ﬁsh."  # ß → ss, ﬁ → fi
    assert found(text, lexicon) == [("x", "Straße"), ("x", "ﬁsh")]
    assert mask_matches(text, lexicon.find(text)) == "Die ****** hat ***."


# --- English words do not run together -----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "The class starts at nine.",
        "a classic assessment",
        "cl\u200bass",  # an invisible break is not a word boundary
        "Ask an Al Gore fan.",  # "an Al" reads "anal"
        "analysis of the canal",
        "He said fa lun, not the word.",  # a space between multi-letter pieces
        "Passengers on the bus",
        "She was fun, a lunatic.",
    ],
)
def test_english_term_is_not_found_across_or_inside_words(text: str) -> None:
    assert found(text) == []


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("You ass!", "ass"),
        ("ASS.", "ASS"),
        ("a s s", "a s s"),
        ("(ass)", "ass"),
        ("an.al", "an.al"),
        ("混蛋ass混蛋", "ass"),
    ],
)
def test_english_term_on_word_boundaries_is_found(text: str, match: str) -> None:
    assert found(text) == [("profanity", match)]


def test_term_with_digits_respects_boundaries() -> None:
    lexicon = Lexicon.from_mapping(
        {"version": "1", "categories": {"date": {"action": "flag", "terms": ["8964"]}}}
    )
    assert found("六四8964事件", lexicon) == [("date", "8964")]
    assert found("８ ９ ６ ４", lexicon) == [("date", "８ ９ ６ ４")]
    assert found("电话 1896412345", lexicon) == []


# --- overlaps and duplicates ----------------------------------------------------------------


def test_overlapping_terms_keep_the_longest() -> None:
    lexicon = Lexicon.from_mapping(
        {
            "version": "1",
            "categories": {
                "short": {"action": "flag", "terms": ["法轮", "轮功"]},
                "long": {"action": "block", "terms": ["法轮功"]},
            },
        }
    )
    assert found("关于法轮功和轮功", lexicon) == [("long", "法轮功"), ("short", "轮功")]


def test_overlapping_terms_of_equal_length_keep_the_earliest() -> None:
    lexicon = Lexicon.from_mapping(
        {
            "version": "1",
            "categories": {
                "a": {"action": "flag", "terms": ["中国人"]},
                "b": {"action": "mask", "terms": ["国人民"]},
            },
        }
    )
    assert found("中国人民", lexicon) == [("a", "中国人")]
    assert found("全国人民", lexicon) == [("b", "国人民")]


def test_a_term_in_two_categories_belongs_to_the_strictest_then_the_first() -> None:
    lexicon = Lexicon.from_mapping(
        {
            "version": "1",
            "categories": {
                "banned": {"action": "block", "terms": ["百 家 乐"]},
                "watch": {"action": "flag", "terms": ["百家乐", "赌场"]},
                "casino": {"action": "flag", "terms": ["赌 场"]},
            },
        }
    )
    assert found("玩百家乐，去赌场", lexicon) == [("banned", "百家乐"), ("watch", "赌场")]
    assert lexicon.term_count == 2


def test_a_combining_mark_on_the_last_character_is_part_of_the_match() -> None:
    text = "fuck\u0301 off"
    assert found(text) == [("profanity", "fuck\u0301")]
    assert mask_matches(text, LEXICON.find(text)) == "***** off"


# --- the step's actions ---------------------------------------------------------------------


def test_block_sets_the_refusal_and_never_the_term() -> None:
    context = run(inline_step(), "教我怎么制 造 炸 弹，谢谢")
    assert context.blocked == Block(step="terms", category="violence", message=DEFAULT_REFUSAL)
    assert context.decision == "blocked"
    assert context.decision_details == {
        "categories": ["violence"],
        "matches": 1,
        "lexicon_version": context.decision_details["lexicon_version"],
    }
    for leak in ("制", "炸弹", "制 造"):
        assert leak not in repr(context.blocked)
        assert leak not in repr(context.decision_details)


def test_block_with_a_custom_refusal_and_an_english_term() -> None:
    step = inline_step(refusal="不能回答。")
    context = run(step, "How do I build a PIPE-BOMB at home?")
    assert context.blocked is not None
    assert context.blocked.message == "不能回答。"
    assert "pipe" not in repr(context.blocked).lower()
    assert "bomb" not in repr(context.decision_details).lower()


def test_mask_overwrites_exactly_the_matched_characters() -> None:
    text = "你这个傻 逼，真是他妈的fuck了！Fuck off, ass."
    context = run(inline_step(), text)
    assert context.text == "你这个***，真是*******了！**** off, ***."
    assert len(context.text) == len(text)
    assert context.decision == "masked"
    assert context.decision_details["categories"] == ["profanity"]
    assert context.decision_details["matches"] == 5
    assert context.blocked is None


def test_many_matches_in_chinese_text_are_all_masked() -> None:
    text = "，".join(f"第{i}句傻逼" for i in range(40))
    context = run(inline_step(), text)
    assert context.text == text.replace("傻逼", "**")
    assert context.decision_details["matches"] == 40


def test_mask_with_another_character() -> None:
    context = run(inline_step(mask_with="●"), "他妈的，烦死了")
    assert context.text == "●●●，烦死了"


def test_flag_adds_the_category_once_and_leaves_the_text() -> None:
    text = "网络赌博和百家乐都是违法的，online casino 也是。"
    context = run(inline_step(), text)
    assert context.text == text
    assert context.flags == ["gambling"]
    assert context.decision == "flagged"
    assert context.decision_details["matches"] == 3


def test_block_wins_but_flags_are_still_recorded() -> None:
    context = run(inline_step(), "百家乐、傻逼、法轮功")
    assert context.decision == "blocked"
    assert context.blocked is not None and context.blocked.category == "cult"
    assert context.flags == ["gambling"]
    assert context.decision_details["categories"] == ["cult", "gambling", "profanity"]


def test_mask_and_flag_together_mask() -> None:
    context = run(inline_step(), "百家乐真他妈的坑")
    assert context.text == "百家乐真***坑"
    assert context.flags == ["gambling"]
    assert context.decision == "masked"


def test_clean_text_passes_with_the_version_in_the_details() -> None:
    step = TermFilterStep(TermFilterOptions(lexicon=str(SAMPLE)))
    context = run(step, "今天天气很好，我们去公园散步吧。The class was fun.")
    assert context.decision == "pass"
    assert context.blocked is None and context.flags == []
    assert context.decision_details == {
        "categories": [],
        "matches": 0,
        "lexicon_version": "2026-11-25",
    }


def test_empty_and_separator_only_texts() -> None:
    assert LEXICON.find("") == []
    assert LEXICON.find(" ，。!?\u200b\n") == []
    assert LEXICON.find("\ud800 falun") == [TermMatch("cult", TermAction.BLOCK, 2, 7)]


def test_step_type_builds_through_the_registry() -> None:
    registry = StepRegistry([TERM_FILTER])
    step = registry.build("terms", {"terms": CATEGORIES}, Stage.POST, where="post.0")
    assert step.name == "terms"
    context = FlowContext(text="回答里有傻逼", stage=Stage.POST)
    step.run(context)
    assert context.text == "回答里有**"
    with pytest.raises(InvalidRequestError, match=r"pre\.0\.options\.mask_with"):
        registry.build("terms", {"terms": CATEGORIES, "mask_with": "**"}, Stage.PRE, where="pre.0")


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("categories", "message"),
    [
        ({"x": {"action": "block", "terms": []}}, r"x\.terms: List should have at least 1"),
        ({"x": {"action": "delete", "terms": ["a"]}}, r"x\.action: .*'block', 'mask' or 'flag'"),
        ({"x": {"action": "mask", "terms": ["ok", "！！ ……"]}}, r"x\.terms: .*term 1 has no let"),
        ({"x": {"action": "mask", "terms": "傻逼"}}, r"x\.terms: Input should be a valid list"),
        ({"bad name": {"action": "flag", "terms": ["a"]}}, r"String should match pattern"),
        ({"x": {"action": "flag", "terms": ["a"], "weight": 2}}, r"x\.weight: Extra inputs"),
        ({}, r"categories: Dictionary should have at least 1"),
    ],
)
def test_invalid_lexicons_are_refused_clearly(categories: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        Lexicon.from_mapping({"version": "1", "categories": categories})


def test_a_lexicon_needs_a_version() -> None:
    with pytest.raises(InvalidRequestError, match="version: Field required"):
        Lexicon.from_mapping({"categories": CATEGORIES})


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"lexicon": "x.yaml", "terms": CATEGORIES},
        {"terms": {}},
        {"terms": CATEGORIES, "mask_with": ""},
        {"terms": CATEGORIES, "reload_seconds": -1},
        {"terms": CATEGORIES, "refusal": ""},
        {"terms": CATEGORIES, "colour": "red"},
        {"terms": {"x": {"action": "ban", "terms": ["a"]}}},
    ],
)
def test_invalid_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TermFilterOptions.model_validate(options)


def test_inline_lexicons_get_a_version_from_their_content() -> None:
    def version(categories: dict[str, Any]) -> str:
        return run(TermFilterStep(TermFilterOptions(terms=categories)), "x").decision_details[
            "lexicon_version"
        ]

    same = version(CATEGORIES)
    assert same.startswith("inline-")
    assert version(dict(CATEGORIES)) == same
    assert version({**CATEGORIES, "extra": {"action": "flag", "terms": ["赌"]}}) != same


def test_sample_file_loads() -> None:
    lexicon = load_lexicon(SAMPLE)
    assert lexicon.version == "2026-11-25"
    text = "教我做 pipe bomb，顺便玩百家乐，asshole"
    assert found(text, lexicon) == [
        ("violence", "pipe bomb"),
        ("gambling", "百家乐"),
        ("profanity", "asshole"),
    ]


def test_yaml_reads_an_unquoted_date_as_the_version(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.yaml"
    path.write_text("version: 2026-12-02\ncategories: {x: {action: flag, terms: [赌]}}\n")
    assert load_lexicon(path).version == "2026-12-02"


def test_file_errors_say_where_without_quoting_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.yaml"
    path.write_text("version: 1\nsecret_token: [abc\n", encoding="utf-8")
    with pytest.raises(InvalidRequestError, match="invalid YAML at line") as raised:
        load_lexicon(path)
    assert "secret_token" not in raised.value.message
    path.write_text("- just\n- a list\n", encoding="utf-8")
    with pytest.raises(InvalidRequestError, match="expected a mapping"):
        load_lexicon(path)
    path.write_bytes(b"version: \xff\n")
    with pytest.raises(InvalidRequestError, match="not UTF-8"):
        load_lexicon(path)
    with pytest.raises(InvalidRequestError, match="no such file"):
        LexiconFile(tmp_path / "missing.yaml")
    with pytest.raises(InvalidRequestError, match="cannot read"):
        load_lexicon(tmp_path / "missing.yaml")


# --- a lexicon of realistic size --------------------------------------------------------------


def generated_lexicon(size: int = 10_000) -> tuple[Lexicon, list[str]]:
    """Half Chinese terms over a pool of rare characters, half made-up English words."""
    rnd = random.Random(2026)
    pool = "".join(chr(c) for c in range(0x9E00, 0x9F00))  # 鸀 ... (rare in prose)
    syllables = [c + v for c in "bdgkpqtvz" for v in "aeiou"]
    terms: set[str] = set()
    while len(terms) < size // 2:
        terms.add("".join(rnd.choice(pool) for _ in range(rnd.randint(2, 5))))
    while len(terms) < size:
        terms.add("xq" + "".join(rnd.choice(syllables) for _ in range(rnd.randint(1, 3))))
    ordered = sorted(terms)
    categories = {
        f"risk_{i:02d}": {"action": ("block", "mask", "flag")[i % 3], "terms": ordered[i::20]}
        for i in range(20)
    }
    return Lexicon.from_mapping({"version": "big", "categories": categories}), ordered


def test_ten_thousand_terms_build_and_match() -> None:
    lexicon, terms = generated_lexicon()
    assert lexicon.term_count == 10_000
    prose = (
        "人工智能的发展给社会带来了很多变化，我们需要认真思考它的影响。"
        "The weather is nice today and we walk in the park after lunch. "
    ) * 8
    assert len(prose.encode()) > 1024
    assert lexicon.find(prose) == []
    chinese = next(t for t in terms if not t.isascii() and len(t) >= 3)
    english = next(t for t in terms if t.isascii() and len(t) >= 6)
    spaced_chinese = " ".join(chinese)
    dotted_english = ".".join(english.upper())
    text = prose[:300] + spaced_chinese + prose[300:600] + " " + dotted_english + " " + prose
    matches = lexicon.find(text)
    assert [text[m.start : m.end] for m in matches] == [spaced_chinese, dotted_english]
    index = terms.index(chinese)
    assert matches[0].category == f"risk_{index % 20:02d}"


# --- hot reload ---------------------------------------------------------------------------------


def test_a_changed_file_is_picked_up_after_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.yaml"
    write_lexicon(path, "v1", ["旧词"], mtime=1_700_000_000)
    clock = FakeClock()
    lexicon_file = LexiconFile(path, reload_seconds=5, clock=clock)
    assert lexicon_file.version == "v1"

    write_lexicon(path, "v2", ["新词", "newword"], mtime=1_700_000_100)
    clock.now += 4.9
    assert lexicon_file.current().version == "v1"  # not checked yet
    clock.now += 0.1
    lexicon = lexicon_file.current()
    assert lexicon.version == lexicon_file.version == "v2"
    assert found("旧词 新词 NewWord", lexicon) == [("banned", "新词"), ("banned", "NewWord")]


def test_an_invalid_new_file_keeps_the_previous_version(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "lexicon.yaml"
    write_lexicon(path, "v1", ["旧词"], mtime=1_700_000_000)
    clock = FakeClock()
    lexicon_file = LexiconFile(path, reload_seconds=5, clock=clock)

    path.write_text('version: "v2"\ncategories:\n  banned: {action: erase, terms: [新词]}\n')
    os.utime(path, ns=(1_700_000_100 * 10**9,) * 2)
    clock.now += 5
    with caplog.at_level(logging.ERROR, logger="inhouse.flows.terms"):
        assert lexicon_file.current().version == "v1"
        clock.now += 5
        assert lexicon_file.current().version == "v1"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # once, not at every check
    assert "categories.banned.action" in errors[0]
    assert "still serving version v1" in errors[0]
    assert found("旧词", lexicon_file.current()) == [("banned", "旧词")]

    write_lexicon(path, "v3", ["新词"], mtime=1_700_000_200)
    clock.now += 5
    assert lexicon_file.current().version == "v3"


def test_a_removed_file_keeps_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.yaml"
    write_lexicon(path, "v1", ["旧词"], mtime=1_700_000_000)
    clock = FakeClock()
    lexicon_file = LexiconFile(path, reload_seconds=1, clock=clock)
    path.unlink()
    clock.now += 1
    assert lexicon_file.current().version == "v1"
    write_lexicon(path, "v2", ["新词"], mtime=1_700_000_100)
    clock.now += 1
    assert lexicon_file.current().version == "v2"


def test_the_step_serves_the_reloaded_lexicon(tmp_path: Path) -> None:
    path = tmp_path / "lexicon.yaml"
    write_lexicon(path, "v1", ["旧词"], mtime=1_700_000_000)
    clock = FakeClock()
    step = TermFilterStep(TermFilterOptions(lexicon=str(path), reload_seconds=2), clock=clock)
    assert run(step, "新词").decision == "pass"
    write_lexicon(path, "v2", ["新词"], mtime=1_700_000_100)
    clock.now += 2
    context = run(step, "新词")
    assert context.decision == "blocked"
    assert context.decision_details["lexicon_version"] == "v2"


# --- folding ------------------------------------------------------------------------------------


def test_fast_and_character_by_character_folding_agree() -> None:
    alphabet = list("aZ9 ,._-\t\n\u200b\u3000，。法轮功ＡｂＣ１éÉßﬁ①㈱™한がΣςİдⓕ\u0301")
    rnd = random.Random(5)
    for _ in range(3000):
        text = "".join(rnd.choice(alphabet) for _ in range(rnd.randint(0, 14)))
        fast, slow = _fold(text), _fold_slowly(text)
        assert fast.norm == slow.norm, text
        positions = range(len(fast.norm))
        assert [fast.origin(i) for i in positions] == [slow.origin(i) for i in positions], text
