"""The MITM forward proxy: the trio listener (:mod:`.listener`), what it does with an
intercepted request (:mod:`.modes`), the local CA (:mod:`.certs` issues, :mod:`.ca`
stores) and client set-up scripts (:mod:`.shellenv`).

Nothing is imported here, so ``proxy env`` stays cheap to start.
"""

__all__ = [
    "ca",
    "certs",
    "exchange",
    "listener",
    "modes",
    "shellenv",
]
