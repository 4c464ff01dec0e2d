from __future__ import annotations

from collections.abc import Sequence

from inhouse.engine.text_stream import StopStringStream

# A toy vocabulary: each token id decodes to a fixed piece of text.
VOCAB = {1: "Hel", 2: "lo", 3: " wor", 4: "ld", 5: "\n", 6: "EN", 7: "D", 8: "!", 9: "Ã©"}


def decode(ids: Sequence[int]) -> str:
    return "".join(VOCAB[i] for i in ids)


def run(stream: StopStringStream, ids: list[int]) -> tuple[list[str], bool]:
    pieces = []
    for token in ids:
        delta = stream.add(token)
        pieces.append(delta.text)
        if delta.stopped:
            return pieces, True
    pieces.append(stream.finish())
    return pieces, False


def test_without_stop_strings_text_flows_token_by_token() -> None:
    pieces, stopped = run(StopStringStream(decode, []), [1, 2, 3, 4])
    assert pieces == ["Hel", "lo", " wor", "ld", ""]
    assert not stopped


def test_stop_string_ends_generation_and_is_not_emitted() -> None:
    pieces, stopped = run(StopStringStream(decode, ["END"]), [1, 2, 6, 7, 8])
    assert stopped
    assert "".join(pieces) == "Hello"


def test_possible_start_of_a_stop_string_is_held_back_then_released() -> None:
    stream = StopStringStream(decode, ["ENDX"])
    assert stream.add(1).text == "Hel"
    assert stream.add(6).text == ""  # "EN" may begin "ENDX"
    assert stream.add(7).text == ""  # "END" still may
    delta = stream.add(8)  # "END!" cannot
    assert delta.text == "END!"
    assert not delta.stopped


def test_earliest_of_several_stop_strings_wins() -> None:
    pieces, stopped = run(StopStringStream(decode, ["world", "lo w"]), [1, 2, 3, 4])
    assert stopped
    assert "".join(pieces) == "Hel"


def test_incomplete_utf8_is_not_released() -> None:
    pieces = {10: "caf", 11: "\ufffd", 12: "é"}

    def partial_decode(ids: Sequence[int]) -> str:
        text = "".join(pieces[i] for i in ids if i != 11)
        return text + "\ufffd" if ids[-1] == 11 else text

    stream = StopStringStream(partial_decode, [])
    assert stream.add(10).text == "caf"
    assert stream.add(11).text == ""
    assert stream.add(12).text == "é"


def test_each_token_costs_the_same_however_long_the_output() -> None:
    """Written as the attack: a long answer with the longest stop strings allowed. The work
    per token (tokens decoded again) must not grow with the output: 2,000 tokens that
    each decoded the whole output would decode two million."""
    decoded = 0

    def counting_decode(ids: Sequence[int]) -> str:
        nonlocal decoded
        decoded += len(ids)
        return "".join(VOCAB[i] for i in ids)

    stops = ["Hel" + "x" * 253, "lo" + "y" * 254, "z" * 256, "wor" + "q" * 253]
    stream = StopStringStream(counting_decode, stops)
    released = "".join(stream.add(token).text for token in [1, 2, 3, 4] * 500)
    released += stream.finish()
    assert released == "Hello world" * 500
    assert decoded <= 4 * 2000
