"""A plain origin: ``/echo`` answers any request with the request itself, as JSON.

What it stands for: an ordinary HTTPS site behind tokn-router's forward proxy (served
over TLS by the ``fake_tls`` fixture; plain HTTP under ``fake``), e.g. a host the proxy
must tunnel or pass through untouched. ``/echo`` and ``/echo/...``, any method, no auth:
``{"method", "path", "query", "headers", "body"}`` with lower-cased header names and the
body decoded as UTF-8. The request is recorded like any other (``service`` =
``"unknown"``), and the ``script(...)`` knobs of ``server.py`` apply.
"""

from __future__ import annotations

from tests.fakes.server import Handler, RecordedRequest, Reply, Script, ScriptedServer, json_reply


class HttpsHost(ScriptedServer):
    """The ``/echo`` origin."""

    def _mount(self, rec: RecordedRequest) -> Handler | None:
        if rec.path == "/echo" or rec.path.startswith("/echo/"):
            return self._echo
        return super()._mount(rec)

    @staticmethod
    def _echo(rec: RecordedRequest, script: Script | None) -> Reply:
        return json_reply(
            200,
            {
                "method": rec.method,
                "path": rec.path,
                "query": rec.query,
                "headers": rec.headers,
                "body": rec.body.decode("utf-8", "replace"),
            },
        )
