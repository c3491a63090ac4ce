-- tokn-router usage ledger: schema v0.0.0, the original tool's first schema.
--
-- Kept as history: tokn-router never creates it, but migrates a database in
-- this shape forward in place on open (see v0.0.0-to-v0.2.0.sql). The original
-- tool never set PRAGMA user_version, so such a file reads as version 0 and is
-- recognised by the columns of its `requests` table.
CREATE TABLE requests (
    id             INTEGER PRIMARY KEY,
    ts             INTEGER NOT NULL,
    account_id     TEXT NOT NULL,
    provider_id    TEXT NOT NULL,
    model          TEXT NOT NULL,
    initiator      TEXT,
    prompt_tok     INTEGER,
    completion_tok INTEGER,
    latency_ms     INTEGER,
    status         INTEGER,
    stream         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX idx_requests_ts ON requests (ts);
CREATE INDEX idx_requests_account ON requests (account_id);
