-- tokn-router usage ledger: schema v0.2.0 (the current schema).
--
-- The `requests` table of the original tool's v0.2.0, so its users' files keep
-- working. One row per request served by the API listener or the MITM proxy.
--   ts          unix seconds when the request started (the precise start, in
--               milliseconds, is ctx_json.started_at_ms)
--   ver         the tokn-router release that wrote the row (migrated rows: the
--               schema they came from, e.g. v0.0.0)
--   params_json {"initiator", "stream", "route_mode", "source"}
--   usage_json  {"input", "output", "cache_read", "reasoning"} token counts;
--               input = prompt tokens including the cached ones; null = unknown
--   ctx_json    {"started_at_ms", "latency_ms", "ttft_ms", "upstream_model",
--               "attempts": [{"account_id", "status", "error"}], ...}
--   status      HTTP status sent to the client; 0 if none was sent
--
-- The schema version lives in PRAGMA user_version: major*10000 + minor*100 + patch.
CREATE TABLE requests (
    id            INTEGER PRIMARY KEY,
    ts            INTEGER NOT NULL,
    session_id    TEXT,
    request_id    TEXT,
    project_id    TEXT,
    ver           TEXT,
    request_error TEXT,
    endpoint      TEXT,
    account_id    TEXT,
    provider_id   TEXT,
    model         TEXT NOT NULL,
    params_json   TEXT,
    usage_json    TEXT,
    ctx_json      TEXT,
    status        INTEGER
);
CREATE INDEX idx_requests_ts ON requests (ts);
CREATE INDEX idx_requests_session_id ON requests (session_id);
CREATE UNIQUE INDEX idx_requests_request_id ON requests (request_id);
CREATE INDEX idx_requests_project_id ON requests (project_id);
CREATE INDEX idx_requests_account_id ON requests (account_id);
PRAGMA user_version = 200;
