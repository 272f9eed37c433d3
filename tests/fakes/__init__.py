"""Stand-ins for cloud services, at the wire: small aiohttp servers on 127.0.0.1 that the
official SDKs talk to unchanged (pointed at `base_url`).

- openai_server.FakeOpenAI: OpenAI-compatible chat completions (JSON and SSE), models.
- anthropic_server.FakeAnthropic: Anthropic Messages (JSON and SSE), models.
- llm_script: the scripted replies both replay (Answer, Error, Hang, Call, Tokens).
"""
