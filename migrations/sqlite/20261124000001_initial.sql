-- Accounts, rooms, sessions and messages. Times are Unix milliseconds (BIGINT) so that SQLite and Postgres
-- agree to the millisecond and the code reads them the same way from both. Flags are INTEGER 0/1: sqlx's
-- Any driver cannot map SQLite's BOOLEAN declared type.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL,
    -- The username folded (NFKC + Unicode case folding, done in Rust): unique, so "Alice" and "ALICE" clash.
    username_key  TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    is_staff      INTEGER NOT NULL DEFAULT 0 CHECK (is_staff IN (0, 1)),
    is_admin      INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    is_active     INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at    BIGINT  NOT NULL
);

CREATE TABLE rooms (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    title           TEXT    NOT NULL CHECK (length(title) BETWEEN 1 AND 255),
    staff_only      INTEGER NOT NULL DEFAULT 0 CHECK (staff_only IN (0, 1)),
    created_at      BIGINT  NOT NULL,
    -- The id of the room's newest message; advanced in the transaction that stores the next one.
    last_message_id BIGINT  NOT NULL DEFAULT 0
);

CREATE TABLE sessions (
    -- SHA-256 of the random token, hex: the token itself is never stored.
    token_hash TEXT    PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE messages (
    room_id    INTEGER NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    id         BIGINT  NOT NULL,
    -- NULL once the author is deleted; `username` keeps the history readable under their name.
    user_id    INTEGER REFERENCES users (id) ON DELETE SET NULL,
    username   TEXT    NOT NULL,
    body       TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    PRIMARY KEY (room_id, id)
);
CREATE INDEX messages_user ON messages (user_id);
