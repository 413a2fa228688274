-- History and loss-free resume: ephemeral rooms store nothing; nonces make a retried send idempotent.
ALTER TABLE rooms ADD COLUMN ephemeral INTEGER NOT NULL DEFAULT 0 CHECK (ephemeral IN (0, 1));

-- Which message a client-chosen nonce produced, per author: a retry (another connection, another node,
-- after a restart) is answered with the same id instead of posting twice. Kept for all rooms, ephemeral
-- ones included (no content here), and swept after a few days by the retention task.
CREATE TABLE message_nonces (
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    nonce      TEXT    NOT NULL,
    room_id    INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    message_id BIGINT  NOT NULL,
    created_at BIGINT  NOT NULL,
    PRIMARY KEY (user_id, nonce)
);
CREATE INDEX message_nonces_age ON message_nonces (created_at);
CREATE INDEX messages_age ON messages (created_at);
