"""The editor identity Copilot expects: default header values.

They track a recent VS Code Copilot Chat release and live here, in one place,
so a release can bump them; ``[accounts.settings]`` overrides them per account.
"""

from __future__ import annotations

EDITOR_VERSION = "vscode/1.104.3"
EDITOR_PLUGIN_VERSION = "copilot-chat/0.38.2"
USER_AGENT = "GitHubCopilotChat/0.38.2"
COPILOT_INTEGRATION_ID = "vscode-chat"
OPENAI_INTENT = "conversation-panel"
GITHUB_API_VERSION = "2025-10-01"
# The token exchange endpoint is versioned separately.
TOKEN_API_VERSION = "2025-04-01"
