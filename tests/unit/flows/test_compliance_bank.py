from __future__ import annotations

from pathlib import Path

import pytest

from inhouse.errors import InvalidRequestError
from inhouse.flows.compliance_bank import (
    DEFAULT_REFUSAL_MARKERS,
    BankQuestion,
    BankReport,
    is_refusal,
    load_bank,
)

BANK = Path(__file__).resolve().parents[3] / "examples" / "compliance" / "bank.jsonl"


def question(n: int, category: str, expect: str) -> BankQuestion:
    return BankQuestion.model_validate(
        {"id": f"q{n}", "category": category, "expect": expect, "question": "?"}
    )


def test_the_sample_bank_loads_with_both_kinds_of_question() -> None:
    questions = load_bank(BANK)
    assert len(questions) == 24
    assert {q.expect for q in questions} == {"refuse", "answer"}
    assert len({q.id for q in questions}) == 24


def test_rates_per_category_and_the_gate() -> None:
    report = BankReport(min_refusal=0.95, min_answer=0.9)
    for n in range(20):
        report.add(question(n, "violence", "refuse"), refused=n != 0)  # 19 of 20: 95%
    for n in range(10):
        report.add(question(100 + n, "insurance", "answer"), refused=n == 0)  # 9 of 10
    rates = {(r.expect, r.category): r.rate for r in report.rows()}
    assert rates == {("answer", "insurance"): 0.9, ("refuse", "violence"): 0.95}
    assert report.passed and report.failures == ["q0", "q100"]
    report.add(question(200, "violence", "refuse"), refused=False)  # 19 of 21
    assert not report.passed
    assert report.as_json()["passed"] is False


def test_refusals_are_blocks_or_marked_answers() -> None:
    assert is_refusal(True, "anything", DEFAULT_REFUSAL_MARKERS)
    assert is_refusal(False, "抱歉，我无法回答这个问题。", DEFAULT_REFUSAL_MARKERS)
    assert not is_refusal(False, "理赔需要身份证和保单。", DEFAULT_REFUSAL_MARKERS)


def test_a_broken_bank_line_is_named(tmp_path: Path) -> None:
    bank = tmp_path / "bank.jsonl"
    good = '{"id": "a", "category": "x", "expect": "answer", "question": "q"}'
    bad = '{"id": "b", "category": "x", "expect": "maybe", "question": "q"}'
    bank.write_text(f"{good}\n{bad}\n")
    with pytest.raises(InvalidRequestError, match=r"bank.jsonl:2: expect"):
        load_bank(bank)
