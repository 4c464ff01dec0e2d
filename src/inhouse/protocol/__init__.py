"""The OpenAI wire protocol, shared by the gateway and ``inhouse node``.

Request and response models (``openai``), reading and validating bodies (``body``),
the error format and its handlers (``errors``), server-sent events (``sse``), what a
request path hands back to HTTP (``replies``) and how it becomes a response
(``http``), the ``X-Inhouse-*`` hint headers (``hints``), ``Authorization: Bearer``
(``bearer``) and request ids (``request_ids``). Nothing here knows tenants, engines
or the database.
"""
