-- Usage history: every usage report an instance sends with a renewal, one
-- row per report (its counters as a JSON object), kept beside the last
-- report on the instance row. Read per license and time range.
CREATE TABLE usage_reports (
    id INTEGER PRIMARY KEY,
    lid TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    counters TEXT NOT NULL
);
CREATE INDEX usage_reports_license ON usage_reports (lid, at);
