"""The MITM forward proxy: local CA (:mod:`.ca`), sans-I/O HTTP/1.1 (:mod:`.http1`),
the trio listener (:mod:`.listener`) and client set-up scripts (:mod:`.shellenv`).

Nothing is imported here, so ``proxy env`` stays cheap to start.
"""
