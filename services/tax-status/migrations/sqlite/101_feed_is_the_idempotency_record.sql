-- Same as on PostgreSQL (see its 101): the feed is the idempotency record.
UPDATE tax.events SET content_sha256 =
    (SELECT r.content_sha256 FROM tax.received r WHERE r.event_id = events.event_id);
DROP TABLE tax.received;
