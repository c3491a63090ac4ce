"""``FakeUpstream``: every fake upstream on one server, the way the fixtures serve them.

One base URL, paths decide the service (``RecordedRequest.service``):

* GitHub web + API (``github.py``): ``/login/...``, ``/user``, ``/copilot_internal/...``
* Copilot API (``copilot.py``): ``/models``, ``/chat/completions``, ``/embeddings``,
  ``/responses``, ``/v1/messages``
* Z.ai (``zai.py``): under ``/api/coding/paas/v4`` and ``/api/paas/v4``
* the plain origin (``https_host.py``): ``/echo[/...]``

Sharing one server is what lets a token minted by the GitHub exchange work on the
Copilot API, and a ``script(token="gho_alice")`` target that account's Copilot traffic.
Other paths: 405 for a known path with the wrong method, else GitHub's 404.
"""

from __future__ import annotations

from tests.fakes.copilot import CopilotFake
from tests.fakes.https_host import HttpsHost
from tests.fakes.zai import ZaiFake


class FakeUpstream(CopilotFake, ZaiFake, HttpsHost):
    """Fake GitHub + Copilot + Z.ai + plain origin. Context manager or ``start()``/``stop()``."""
