"""``POST /v1/flows/{name}/run``: a published flow with structured input and output,
for callers that are not chat clients (forms, batch jobs)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from pydantic import BaseModel, ConfigDict, Field

from inhouse.api.access import Require
from inhouse.api.admin_schemas import Text
from inhouse.api.deps import ServicesDep
from inhouse.gateway.context import Endpoint
from inhouse.protocol.openai import ChatCompletionRequest, Usage
from inhouse.protocol.replies import JsonReply, Reply
from inhouse.tenancy.models import Principal
from inhouse.tenancy.permissions import Permission

router = APIRouter(prefix="/v1/flows", tags=["flows"])

Caller = Annotated[Principal, Depends(Require(Permission.INFERENCE))]


class FlowRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: Annotated[Text, Field(min_length=1, max_length=1_000_000)]
    variables: dict[str, str] = Field(default_factory=dict, description="the template's {names}")
    user: Annotated[Text, Field(max_length=256)] | None = Field(
        default=None, description="the end user: violation counters and audit use it"
    )


class FlowRunResult(BaseModel):
    flow: str
    version: int
    output: str
    blocked: dict[str, str] | None
    flags: list[str]
    metadata: dict[str, Any]
    usage: Usage
    trace: list[dict[str, Any]] | None = None


@router.post("/{name}/run", response_model=FlowRunResult)
async def run_flow(
    name: Text,
    body: FlowRunRequest,
    services: ServicesDep,
    principal: Caller,
    x_inhouse_trace: Annotated[str | None, Header()] = None,
) -> FlowRunResult:
    """Run the tenant's published flow NAME on ``input``."""
    request = chat_request(f"flow:{name}", body)
    reply = await services.pipeline.handle(
        principal, request, Endpoint.CHAT, trace=x_inhouse_trace == "1"
    )
    return flow_run_result(reply)


def chat_request(flow_model: str, body: FlowRunRequest) -> ChatCompletionRequest:
    """A run request as the chat request a flow answers."""
    return ChatCompletionRequest.model_validate(
        {
            "model": flow_model,
            "messages": [{"role": "user", "content": body.input}],
            "user": body.user,
            "metadata": body.variables,
        }
    )


def flow_run_result(reply: Reply) -> FlowRunResult:
    """A flow's chat completion as structured output."""
    assert isinstance(reply, JsonReply) and reply.payload is not None
    answer = reply.payload
    inhouse = answer["inhouse"]
    known = {"flow", "version", "blocked", "flags", "trace"}
    return FlowRunResult(
        flow=inhouse["flow"],
        version=inhouse["version"],
        output=answer["choices"][0]["message"]["content"],
        blocked=inhouse["blocked"],
        flags=inhouse["flags"],
        metadata={k: v for k, v in inhouse.items() if k not in known},
        usage=Usage.model_validate(answer["usage"]),
        trace=inhouse.get("trace"),
    )
