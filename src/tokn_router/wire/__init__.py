"""Sans-I/O protocol logic: bytes and JSON in, bytes and decisions out.

Nothing here imports trio, httpx, quart or hypercorn (tests/test_structure.py
checks), so every rule is testable as a plain function or state machine.
"""

__all__ = [
    "errors",
    "hosts",
    "http1",
    "initiator",
    "jsondepth",
    "quota",
    "sse",
    "transforms",
    "translate",
    "usage",
    "validate",
]
