"""The LLM router: one interface to every configured model, with retries, fallbacks, circuit
breakers, rate limits, budgets and cost tracking.

    router = LLMRouter.from_config(config, redis=redis, db=pool)
    request = ChatRequest(messages=[Message.user("hi")], context=CallContext(...))
    result = await router.chat(request)
    async for event in router.stream(request): ...  # TextDelta | ToolCallDelta, then ChatResult

Modules, one concept each:
- types:      messages, tool schemas and calls, usage, requests, results, stream events
- providers:  the official openai and anthropic SDKs behind one small adapter interface
- gate:       the request hook that holds a call's first request until its rate-limit check
- catalog:    model references and aliases resolved, the chain a call tries, the models' roles
- admission:  whether a call may go and on which models (budgets, rate limits)
- router:     LLMRouter (the one attempt loop of chat and stream: retries, fallbacks, timeouts,
              the call record)
- breaker:    the per-provider circuit breaker
- ratelimit:  requests and tokens per minute in Redis (one Lua script, atomic across processes)
- budget:     monthly USD budgets from the usage table
- pricing:    cost of a call (genai-prices, config overrides, local models free)
- usage:      UsageStore: the llm_usage table and its summaries
- redaction:  e-mail addresses, phone numbers and configured secrets out of prompts and logs
"""

from __future__ import annotations

from bot.llm.catalog import ModelInfo, ModelRef
from bot.llm.router import LLMRouter
from bot.llm.types import (
    CallContext,
    ChatRequest,
    ChatResult,
    Limits,
    Message,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSchema,
    Usage,
)

__all__ = [
    "CallContext",
    "ChatRequest",
    "ChatResult",
    "LLMRouter",
    "Limits",
    "Message",
    "ModelInfo",
    "ModelRef",
    "StreamEvent",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolSchema",
    "Usage",
]
