"""PII masking: checksums decide, adversarial spellings are caught, masking round-trips."""

from __future__ import annotations

import pytest

from inhouse.errors import InvalidRequestError
from inhouse.flows.pii import Finding, PiiKind, detect, mask, restore

FULL_WIDTH = str.maketrans("0123456789X-", "０１２３４５６７８９Ｘ－")


def id_check(first17: str) -> str:
    """ISO 7064 MOD 11-2, written from the standard's formula (weights 2^(n-1) mod 11)."""
    total = sum(int(d) * pow(2, 17 - i, 11) for i, d in enumerate(first17))
    check = (12 - total % 11) % 11
    return "X" if check == 10 else str(check)


def id_number(region: str = "110105", birth: str = "19491231", seq: str = "002") -> str:
    first17 = region + birth + seq
    return first17 + id_check(first17)


def id_ending_in_x() -> str:
    return next(n for s in range(1000) if (n := id_number(seq=f"{s:03d}")).endswith("X"))


def luhn_complete(payload: str) -> str:
    """The payload with the check digit that makes it pass Luhn."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:  # doubled, since the check digit will sit to its right
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return payload + str((10 - total % 10) % 10)


def with_bad_check(number: str) -> str:
    return number[:-1] + str((int(number[-1]) + 1) % 10)


ID = id_number()
CARD = luhn_complete("622202123456789")


def test_helpers_agree_with_published_examples() -> None:
    # The example in GB 11643-1999 and a well-known Visa test number.
    assert id_number("110105", "19491231", "002") == "11010519491231002X"
    assert luhn_complete("411111111111111") == "4111111111111111"


def test_valid_id_number_in_chinese_text_is_masked() -> None:
    text = f"我的身份证号是{ID}，请核对。"
    masked = mask(text)
    assert masked.text == "我的身份证号是[ID_CARD_1]，请核对。"
    assert dict(masked.mapping) == {"[ID_CARD_1]": ID}


def test_id_number_with_one_digit_changed_is_not_pii() -> None:
    valid = id_number(seq="123")
    changed = valid[:16] + str((int(valid[16]) + 1) % 10) + valid[17]
    assert id_number(seq=changed[14:17]) != changed  # the checksum is now wrong
    text = f"身份证：{changed}"
    assert detect(text) == []
    assert mask(text).text == text


def test_mistyped_id_number_is_not_taken_for_a_bank_card() -> None:
    # An ID-shaped number whose check character is wrong but which happens to pass Luhn.
    number = next(
        v
        for s in range(1000)
        for d in "0123456789"
        if (v := id_number(seq=f"{s:03d}")[:17] + d) != id_number(seq=f"{s:03d}")
        and luhn_complete(v[:-1]) == v
    )
    assert detect(f"证件号{number}") == []


def test_kinds_do_not_find_a_phone_inside_an_id_number() -> None:
    assert detect(f"身份证{ID[:17]}1", kinds={PiiKind.PHONE, PiiKind.BANK_CARD}) == []
    assert detect(f"身份证{ID}", kinds={PiiKind.PHONE}) == []


def test_id_number_with_impossible_birth_date_is_not_pii() -> None:
    number = id_number(birth="19490230")  # valid checksum, no 30 February
    assert detect(f"证件号 {number}") == []


def test_id_number_ending_in_x_either_case() -> None:
    number = id_ending_in_x()
    assert [f.kind for f in detect(f"ID:{number}.")] == [PiiKind.ID_CARD]
    assert mask(f"身份证{number.lower()}").text == "身份证[ID_CARD_1]"


def test_full_width_id_number_masks_the_original_characters() -> None:
    wide = ID.translate(FULL_WIDTH)
    text = f"身份证号码：{wide}。"
    masked = mask(text)
    assert masked.text == "身份证号码：[ID_CARD_1]。"
    assert masked.mapping["[ID_CARD_1]"] == wide


@pytest.mark.parametrize(
    "spelled",
    [
        f"{ID[:6]} {ID[6:14]} {ID[14:]}",
        f"{ID[:6]}-{ID[6:14]}-{ID[14:]}",
        " ".join(ID),
    ],
)
def test_id_number_split_by_spaces_or_hyphens(spelled: str) -> None:
    text = f"号码{spelled}结束"
    (finding,) = detect(text)
    assert finding == Finding(PiiKind.ID_CARD, 2, 2 + len(spelled), spelled)


@pytest.mark.parametrize(
    "phone",
    [
        "13800138000",
        "+8613800138000",
        "+86 138 0013 8000",
        "0086-138-0013-8000",
        "1380 0138 000",
        "１３８００１３８０００",
        "138\u200b0013\u200b8000",
        "010-62345678",
        "0755-2345678",
    ],
)
def test_phone_numbers_are_masked_whole(phone: str) -> None:
    masked = mask(f"请联系{phone}谢谢")
    assert masked.text == "请联系[PHONE_1]谢谢"
    assert masked.mapping == {"[PHONE_1]": phone}


def test_numbers_that_are_not_phones_stay() -> None:
    text = "订单12345678901号，金额3.14元，共12件，2024年，编号 12800138000"
    assert mask(text).text == text


def test_two_phones_separated_by_one_space_are_both_found() -> None:
    masked = mask("call 13800138000 13900139000 now")
    assert masked.text == "call [PHONE_1] [PHONE_2] now"


def test_phone_after_other_spaced_numbers_is_found() -> None:
    assert (
        mask("订单 20240315 0001 13800138000 已发货").text == "订单 20240315 0001 [PHONE_1] 已发货"
    )


def test_bank_card_with_valid_luhn_is_masked_and_invalid_is_not() -> None:
    spaced = " ".join(CARD[i : i + 4] for i in range(0, 16, 4))
    assert mask(f"卡号{CARD}").text == "卡号[BANK_CARD_1]"
    assert mask(f"Card: {spaced}.").text == "Card: [BANK_CARD_1]."
    invalid = with_bad_check(CARD)
    assert detect(f"卡号{invalid}") == []
    assert detect(f"Card: {' '.join(invalid[i : i + 4] for i in range(0, 16, 4))}") == []


def test_card_followed_by_another_number_is_still_found() -> None:
    masked = mask(f"卡号 {CARD} 12月到期")
    assert masked.text == "卡号 [BANK_CARD_1] 12月到期"


def test_email_and_ip_inside_a_chinese_sentence() -> None:
    text = "请发邮件到zhang.san@example.com或访问192.168.1.100，IPv6是2001:db8::8a2e:370:7334。"
    masked = mask(text)
    assert masked.text == "请发邮件到[EMAIL_1]或访问[IP_1]，IPv6是[IP_2]。"
    assert masked.mapping["[IP_2]"] == "2001:db8::8a2e:370:7334"


def test_things_that_look_like_addresses_but_are_not() -> None:
    text = "版本 1.2.3，时间 12:30:45，比例 999.1.1.1，std::vector，a@b"
    assert detect(text) == []


def test_email_made_of_a_phone_number_is_one_email() -> None:
    assert [f.kind for f in detect("邮箱13800138000@163.com")] == [PiiKind.EMAIL]


def test_passport_numbers() -> None:
    masked = mask("护照号E12345678，新版护照EA1234567，不是XE12345678")
    assert masked.text == "护照号[PASSPORT_1]，新版护照[PASSPORT_2]，不是XE12345678"


def test_custom_pattern_including_full_width_spelling() -> None:
    custom = {"employee_id": r"EMP-\d{6}"}
    masked = mask("工号EMP-123456，另一个ＥＭＰ－６５４３２１。", custom=custom)
    assert masked.text == "工号[EMPLOYEE_ID_1]，另一个[EMPLOYEE_ID_2]。"
    assert masked.findings[0].kind == "employee_id"


@pytest.mark.parametrize("custom", [{"bad name": "x"}, {"ok": "(unclosed"}])
def test_bad_custom_pattern_is_refused(custom: dict[str, str]) -> None:
    with pytest.raises(InvalidRequestError):
        detect("text", custom=custom)


def test_custom_pattern_wins_a_tie_and_the_longer_finding_wins() -> None:
    assert [f.kind for f in detect("电话13800138000", custom={"mobile": r"1\d{10}"})] == ["mobile"]
    (finding,) = detect("ref 13800138000-ORDER-77", custom={"order": r"8000-ORDER-\d+"})
    assert (finding.kind, finding.value) == ("order", "8000-ORDER-77")


def test_kinds_limits_the_detectors() -> None:
    text = "电话13800138000，邮箱a.b@example.org"
    assert [f.kind for f in detect(text, kinds={PiiKind.EMAIL})] == [PiiKind.EMAIL]


def test_same_value_gets_same_placeholder() -> None:
    text = f"13800138000 和 13900139000，再说一遍 13800138000；身份证 {ID} / {ID}"
    masked = mask(text)
    assert masked.text == (
        "[PHONE_1] 和 [PHONE_2]，再说一遍 [PHONE_1]；身份证 [ID_CARD_1] / [ID_CARD_1]"
    )
    assert len(masked.mapping) == 3


def test_placeholder_already_in_text_is_not_reused() -> None:
    text = "模板里有[PHONE_1]，真实号码13800138000"
    masked = mask(text)
    assert masked.text == "模板里有[PHONE_1]，真实号码[PHONE_2]"
    assert restore(masked.text, masked.mapping) == text


MIXED = (
    f"客户张三，身份证{id_ending_in_x()}，手机＋８６ １３８ ００１３ ８０００，"
    f"座机010-62345678……卡号 {CARD}。"
    "Email: li.si@corp.example.cn, server 10.0.0.12 and fe80::1ff:fe23:4567:890a. "
    "护照E12345678，工号EMP-004211。没有别的。"
)


def test_restore_of_mask_gives_back_the_text() -> None:
    masked = mask(MIXED, custom={"EMP": r"EMP-\d{6}"})
    assert len(masked.mapping) == 9
    for placeholder, original in masked.mapping.items():
        assert placeholder in masked.text
        assert original not in masked.text
    assert restore(masked.text, masked.mapping) == MIXED


def test_findings_index_the_original_text() -> None:
    for finding in detect(MIXED):
        assert MIXED[finding.start : finding.end] == finding.value


def test_text_without_pii_is_unchanged() -> None:
    for text in (
        "今天天气很好，我们在2024年3月15日开会，预算为12,000元。",
        "The meeting is at 10:30 in room 404; see section 3.2.1 for details.",
        "",
    ):
        masked = mask(text)
        assert masked.text == text
        assert masked.mapping == {}


def test_restore_leaves_unknown_placeholders() -> None:
    assert restore("[PHONE_1] and [EMAIL_7]", {"[PHONE_1]": "13800138000"}) == (
        "13800138000 and [EMAIL_7]"
    )
