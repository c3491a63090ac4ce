-- Migration v0.0.0 -> v0.2.0, run in place inside one transaction by
-- tokn_router.usage.schema (a failure rolls everything back).
--
-- Every row is kept with its id and values:
--   prompt_tok / completion_tok -> usage_json.input / .output
--   initiator / stream          -> params_json.initiator / .stream (a JSON boolean)
--   latency_ms                  -> ctx_json.latency_ms
--   ver                         =  'v0.0.0', the schema the row came from
-- Unknown values (cache_read, reasoning, route_mode, source, ...) are JSON null.
--
-- The rows are parked in a temp table instead of renaming the old table,
-- because ALTER TABLE ... RENAME rewrites the CREATE statement kept in
-- sqlite_master, and a migrated file must be identical to a fresh one.
CREATE TEMP TABLE requests_v0_0_0 AS SELECT * FROM main.requests;
DROP TABLE main.requests;
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
INSERT INTO main.requests
    (id, ts, ver, account_id, provider_id, model, params_json, usage_json, ctx_json, status)
SELECT
    id, ts, 'v0.0.0', account_id, provider_id, model,
    json_object(
        'initiator', initiator,
        'stream', json(CASE WHEN stream IS NULL THEN 'null' WHEN stream THEN 'true' ELSE 'false' END),
        'route_mode', NULL,
        'source', NULL
    ),
    json_object('input', prompt_tok, 'output', completion_tok, 'cache_read', NULL, 'reasoning', NULL),
    json_object('latency_ms', latency_ms),
    status
FROM temp.requests_v0_0_0
ORDER BY id;
DROP TABLE temp.requests_v0_0_0;
CREATE INDEX idx_requests_ts ON requests (ts);
CREATE INDEX idx_requests_session_id ON requests (session_id);
CREATE UNIQUE INDEX idx_requests_request_id ON requests (request_id);
CREATE INDEX idx_requests_project_id ON requests (project_id);
CREATE INDEX idx_requests_account_id ON requests (account_id);
PRAGMA user_version = 200;
