-- Accounts, rooms, sessions and messages. Times are Unix milliseconds (BIGINT) so that SQLite and Postgres
-- agree to the millisecond and the code reads them the same way from both.
CREATE TABLE users (
    id            BIGSERIAL PRIMARY KEY,
    username      TEXT      NOT NULL,
    -- The username folded (NFKC + Unicode case folding, done in Rust): unique, so "Alice" and "ALICE" clash.
    username_key  TEXT      NOT NULL UNIQUE,
    password_hash TEXT      NOT NULL,
    is_staff      BOOLEAN   NOT NULL DEFAULT FALSE,
    is_admin      BOOLEAN   NOT NULL DEFAULT FALSE,
    is_active     BOOLEAN   NOT NULL DEFAULT TRUE,
    created_at    BIGINT    NOT NULL
);

CREATE TABLE rooms (
    id              BIGSERIAL PRIMARY KEY,
    title           TEXT      NOT NULL CHECK (char_length(title) BETWEEN 1 AND 255),
    staff_only      BOOLEAN   NOT NULL DEFAULT FALSE,
    created_at      BIGINT    NOT NULL,
    -- The id of the room's newest message; advanced in the transaction that stores the next one.
    last_message_id BIGINT    NOT NULL DEFAULT 0
);

CREATE TABLE sessions (
    -- SHA-256 of the random token, hex: the token itself is never stored.
    token_hash TEXT   PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE messages (
    room_id    BIGINT NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    id         BIGINT NOT NULL,
    -- NULL once the author is deleted; `username` keeps the history readable under their name.
    user_id    BIGINT REFERENCES users (id) ON DELETE SET NULL,
    username   TEXT   NOT NULL,
    body       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, id)
);
CREATE INDEX messages_user ON messages (user_id);
