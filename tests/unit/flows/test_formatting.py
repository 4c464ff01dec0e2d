"""The json and markdown steps: extraction, validation, one repair, escaping, plain text."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from inhouse.flows.context import Block, FlowContext, Stage
from inhouse.flows.formatting import (
    FORMAT_REFUSAL,
    JSON_FORMAT,
    MARKDOWN,
    JsonFormatOptions,
    MarkdownOptions,
    canonical_json,
    markdown_to_text,
)

ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "customer": {"type": "string", "minLength": 1},
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string"},
                    "quantity": {"type": "integer", "minimum": 1},
                },
                "required": ["sku", "quantity"],
            },
        },
        "urgent": {"type": "boolean"},
    },
    "required": ["customer", "items"],
    "additionalProperties": False,
}
ORDER = {"customer": "王小明", "items": [{"sku": "A-100", "quantity": 2}], "urgent": False}
CANONICAL = '{"customer":"王小明","items":[{"sku":"A-100","quantity":2}],"urgent":false}'


class FakeRegenerate:
    """Stands in for asking the model again: records each instruction, returns a fixed answer."""

    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.instructions: list[str] = []

    def __call__(self, instruction: str) -> str:
        self.instructions.append(instruction)
        return self.answer


def run_json(
    text: str,
    schema: dict[str, Any] | None = None,
    *,
    regenerate: FakeRegenerate | None = None,
    repair: bool = True,
) -> FlowContext:
    options = JsonFormatOptions.model_validate(
        {"schema": ORDER_SCHEMA if schema is None else schema, "repair": repair}
    )
    context = FlowContext(text, stage=Stage.POST, regenerate=regenerate)
    JSON_FORMAT.build(options).run(context)
    return context


# --- options ----------------------------------------------------------------------------


def test_a_bad_schema_is_a_validation_error_with_a_clear_message() -> None:
    bad = {"type": "object", "properties": {"age": {"type": "integr"}}}
    with pytest.raises(ValidationError) as caught:
        JsonFormatOptions.model_validate({"schema": bad})
    error = caught.value.errors(include_url=False)[0]
    assert error["loc"] == ("schema",)
    assert "not a valid JSON Schema at $.properties.age.type" in error["msg"]
    assert "'integr'" in error["msg"]


def test_a_schema_that_is_not_a_mapping_is_rejected() -> None:
    with pytest.raises(ValidationError):
        JsonFormatOptions.model_validate({"schema": ["type", "object"]})


def test_a_reference_outside_the_schema_is_rejected_not_fetched() -> None:
    remote = {"$ref": "https://schemas.example.com/order.json"}
    with pytest.raises(ValidationError, match="does not resolve inside the schema"):
        JsonFormatOptions.model_validate({"schema": remote})
    dangling = {"properties": {"a": {"$ref": "#/$defs/missing"}}}
    with pytest.raises(ValidationError, match="#/\\$defs/missing"):
        JsonFormatOptions.model_validate({"schema": dangling})


def test_references_inside_the_schema_work() -> None:
    schema = {
        "$defs": {"qty": {"type": "integer", "minimum": 1}},
        "type": "object",
        "properties": {"n": {"$ref": "#/$defs/qty"}},
    }
    assert run_json('{"n": 3}', schema).decision == "pass"
    assert run_json('{"n": 0}', schema).blocked is not None


def test_unknown_options_are_errors() -> None:
    with pytest.raises(ValidationError):
        JsonFormatOptions.model_validate({"schema": {}, "retries": 3})
    with pytest.raises(ValidationError):
        JsonFormatOptions.model_validate({"repair": True})  # schema is required


# --- parsing and extraction -------------------------------------------------------------


def test_plain_json_passes_and_becomes_canonical() -> None:
    answer = json.dumps(ORDER, ensure_ascii=True, indent=2)  # \u escapes, pretty-printed
    context = run_json(answer)
    assert context.decision == "pass"
    assert context.blocked is None
    assert context.text == CANONICAL
    assert context.metadata["json"] == ORDER


def test_key_order_is_the_models() -> None:
    answer = '{"urgent": true, "items": [{"quantity": 1, "sku": "B"}], "customer": "Ann"}'
    assert run_json(answer).text == (
        '{"urgent":true,"items":[{"quantity":1,"sku":"B"}],"customer":"Ann"}'
    )


def test_json_in_a_code_fence_with_prose_is_extracted() -> None:
    answer = (
        "好的，以下是整理后的订单：\n\n```json\n"
        + json.dumps(ORDER, ensure_ascii=False, indent=2)
        + "\n```\n\n如需修改请告诉我。"
    )
    context = run_json(answer)
    assert context.decision == "changed"
    assert context.decision_details == {"extracted": "fence"}
    assert context.text == CANONICAL


def test_unlabelled_fence_is_extracted() -> None:
    context = run_json("```\n" + CANONICAL + "\n```")
    assert (context.decision, context.text) == ("changed", CANONICAL)


def test_one_object_inside_prose_is_extracted() -> None:
    answer = f"Sure! Here is the order you asked for: {CANONICAL} Let me know if anything changes."
    context = run_json(answer)
    assert context.decision == "changed"
    assert context.decision_details == {"extracted": "prose"}
    assert context.metadata["json"] == ORDER


def test_prose_after_the_json_is_not_ignored() -> None:
    context = run_json(CANONICAL + "\n\nHope this helps!")
    assert context.decision == "changed"
    assert context.decision_details == {"extracted": "prose"}
    assert context.text == CANONICAL


def test_two_values_in_prose_are_ambiguous() -> None:
    answer = f"Option one: {CANONICAL}\nOption two: {CANONICAL}"
    context = run_json(answer)
    assert context.blocked is not None
    assert context.decision_details == {"problem": "syntax"}


def test_nan_is_not_json() -> None:
    context = run_json('{"x": NaN}', {"type": "object"})
    assert context.blocked is not None


def test_deep_nesting_is_invalid_not_a_crash() -> None:
    context = run_json("[" * 100_000, {})
    assert context.blocked is not None


# --- validation, repair and blocking ----------------------------------------------------


def test_invalid_answer_is_repaired_once() -> None:
    wrong = '{"customer": "王小明", "items": [{"sku": "A-100", "quantity": "two"}]}'
    fake = FakeRegenerate("```json\n" + CANONICAL + "\n```")
    context = run_json(wrong, regenerate=fake)
    assert len(fake.instructions) == 1
    instruction = fake.instructions[0]
    assert "$.items[0].quantity" in instruction
    assert "'two' is not of type 'integer'" in instruction
    assert '"additionalProperties":false' in instruction  # the schema is repeated
    assert context.decision == "repaired"
    assert context.decision_details == {"problem": "schema"}
    assert context.blocked is None
    assert context.text == CANONICAL
    assert context.metadata["json"] == ORDER


def test_unparseable_answer_names_the_syntax_error() -> None:
    fake = FakeRegenerate(CANONICAL)
    context = run_json('{"customer": "Ann", "items": [}', regenerate=fake)
    assert "not valid JSON" in fake.instructions[0]
    assert context.decision == "repaired"
    assert context.decision_details == {"problem": "syntax"}


def test_answer_without_json_asks_for_json() -> None:
    fake = FakeRegenerate(CANONICAL)
    context = run_json("抱歉，我无法生成订单。", regenerate=fake)
    assert "no JSON object or array" in fake.instructions[0]
    assert context.decision == "repaired"


def test_still_invalid_after_the_repair_is_blocked() -> None:
    wrong = '{"customer": "", "items": []}'
    fake = FakeRegenerate('{"customer": "Ann", "items": [], "note": "still wrong"}')
    context = run_json(wrong, regenerate=fake)
    assert len(fake.instructions) == 1  # asked once, not again
    assert context.blocked == Block(step="json", category="format", message=FORMAT_REFUSAL)
    assert "did not match the required format" in context.blocked.message
    assert context.decision == "blocked"
    assert context.decision_details == {"problem": "schema"}
    assert "json" not in context.metadata


def test_without_regenerate_an_invalid_answer_is_blocked() -> None:
    context = run_json('{"customer": "Ann"}')
    assert context.blocked is not None
    assert context.blocked.category == "format"


def test_repair_off_never_asks_again() -> None:
    fake = FakeRegenerate(CANONICAL)
    context = run_json('{"customer": "Ann"}', regenerate=fake, repair=False)
    assert fake.instructions == []
    assert context.blocked is not None


def test_valid_answer_never_asks_again() -> None:
    fake = FakeRegenerate("not used")
    run_json(CANONICAL, regenerate=fake)
    assert fake.instructions == []


def test_long_messages_are_cut_in_the_instruction() -> None:
    fake = FakeRegenerate('"short"')
    run_json(json.dumps("x" * 5000), {"type": "string", "maxLength": 10}, regenerate=fake)
    assert len(fake.instructions[0]) < 1000


def test_canonical_json() -> None:
    value = {"名字": "张三", "n": [1, 2.5, None]}
    assert canonical_json(value) == '{"名字":"张三","n":[1,2.5,null]}'


# --- markdown ---------------------------------------------------------------------------


def run_markdown(text: str, to: str) -> FlowContext:
    context = FlowContext(text, stage=Stage.POST)
    MARKDOWN.build(MarkdownOptions.model_validate({"to": to})).run(context)
    return context


ANSWER = """## 部署步骤

请按**以下顺序**操作，详见[官方文档](https://docs.example.com/deploy)：

1. 安装依赖：`pip install inhouse`
2. 启动服务
   - 开发环境用 *debug* 模式
   - 生产环境用 `--workers 4`

```bash
inhouse serve \\
    --port 8080
```

> 注意：端口 8080 不能被占用。

---

完成后访问 <https://localhost:8080>。"""


def test_markdown_to_text() -> None:
    context = run_markdown(ANSWER, "text")
    assert context.decision == "changed"
    assert context.text == (
        "部署步骤\n\n"
        "请按以下顺序操作，详见官方文档：\n\n"
        "1. 安装依赖：pip install inhouse\n"
        "2. 启动服务\n"
        "   - 开发环境用 debug 模式\n"
        "   - 生产环境用 --workers 4\n\n"
        "inhouse serve \\\n"
        "    --port 8080\n\n"
        "注意：端口 8080 不能被占用。\n\n"
        "完成后访问 https://localhost:8080。"
    )


def test_markdown_text_lists_and_breaks() -> None:
    source = (
        "Intro line\nwrapped here.\n\n"
        "- loose item\n\n  second paragraph\n- next\n\n"
        "7. seven\n8. eight\n\n"
        "![diagram of *the* flow](flow.png) &amp; &copy;"
    )
    assert markdown_to_text(source) == (
        "Intro line\nwrapped here.\n\n"
        "- loose item\n\n  second paragraph\n\n- next\n\n"
        "7. seven\n8. eight\n\n"
        "diagram of the flow & ©"
    )


def test_raw_html_in_markdown_stays_text() -> None:
    source = "Hello <script>alert(1)</script> and <b>bold</b>\n\n<div onclick=x()>block</div>"
    assert markdown_to_text(source) == (
        "Hello <script>alert(1)</script> and <b>bold</b>\n\n<div onclick=x()>block</div>"
    )


def test_markdown_to_html_escapes_raw_html() -> None:
    source = "**Hi** <script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n[ok](https://example.com)"
    html = run_markdown(source, "html").text
    assert "<script>" not in html
    assert "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<strong>Hi</strong>" in html
    assert '<a href="https://example.com">ok</a>' in html


def test_markdown_to_html_does_not_link_javascript() -> None:
    html = run_markdown("[click me](javascript:alert(1))", "html").text
    assert "href" not in html


def test_markdown_to_html_renders_lists_and_code() -> None:
    html = run_markdown("# 标题\n\n- 一\n- 二\n\n```python\nx = '<b>'\n```", "html").text
    assert html == (
        "<h1>标题</h1>\n<ul>\n<li>一</li>\n<li>二</li>\n</ul>\n"
        "<pre><code class=\"language-python\">x = '&lt;b&gt;'\n</code></pre>\n"
    )


def test_plain_text_passes() -> None:
    context = run_markdown("今天天气很好，适合出门。", "text")
    assert context.decision == "pass"
    assert context.text == "今天天气很好，适合出门。"


def test_markdown_options() -> None:
    with pytest.raises(ValidationError):
        MarkdownOptions.model_validate({})
    with pytest.raises(ValidationError):
        MarkdownOptions.model_validate({"to": "pdf"})


def test_step_types_run_after_the_model_only() -> None:
    assert JSON_FORMAT.name == "json"
    assert MARKDOWN.name == "markdown"
    assert JSON_FORMAT.stages == frozenset({Stage.POST})
    assert MARKDOWN.stages == frozenset({Stage.POST})
    assert JSON_FORMAT.build(JsonFormatOptions.model_validate({"schema": {}})).name == "json"
