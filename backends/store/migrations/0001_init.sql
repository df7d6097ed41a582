-- 0001: users, devices, registration codes, inbox, client seen ids.
-- Times are INTEGER milliseconds since the Unix epoch.

CREATE TABLE users (
	id         INTEGER PRIMARY KEY,
	name       TEXT    NOT NULL UNIQUE CHECK (length(CAST(name AS BLOB)) BETWEEN 1 AND 64),
	created_ms INTEGER NOT NULL
);

CREATE TABLE devices (
	id          BLOB    PRIMARY KEY CHECK (length(id) = 16),
	user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	static_key  BLOB    NOT NULL UNIQUE CHECK (length(static_key) = 32),
	certificate BLOB,
	created_ms  INTEGER NOT NULL
);
CREATE INDEX devices_user ON devices (user_id);

-- Only the SHA-256 hash of a registration code is stored, never the code.
CREATE TABLE registration_codes (
	hash       BLOB    PRIMARY KEY CHECK (length(hash) = 32),
	expires_ms INTEGER NOT NULL,
	used_ms    INTEGER
);

-- seq orders the inbox: AUTOINCREMENT never reuses a value, so a higher seq
-- was always stored later. An acknowledged message loses its body and stays
-- as a tombstone (delivered = 1) until it expires, so that a resubmission
-- of it is still recognised as a duplicate.
CREATE TABLE inbox (
	seq        INTEGER PRIMARY KEY AUTOINCREMENT,
	id         BLOB    NOT NULL CHECK (length(id) = 16),
	from_user  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	to_user    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	body       BLOB    NOT NULL,
	sent_ms    INTEGER NOT NULL,
	stored_ms  INTEGER NOT NULL,
	expires_ms INTEGER NOT NULL,
	delivered  INTEGER NOT NULL DEFAULT 0 CHECK (delivered IN (0, 1)),
	-- id first: the same index finds a resubmission (id, from_user) and
	-- the message a recipient acknowledges (id, then to_user).
	UNIQUE (id, from_user)
);
CREATE INDEX inbox_pending ON inbox (to_user, seq) WHERE delivered = 0;
CREATE INDEX inbox_expires ON inbox (expires_ms);

-- The client's record of messages already shown, for duplicate suppression.
CREATE TABLE seen (
	from_name TEXT    NOT NULL,
	id        BLOB    NOT NULL CHECK (length(id) = 16),
	seen_ms   INTEGER NOT NULL,
	PRIMARY KEY (from_name, id)
) WITHOUT ROWID;
CREATE INDEX seen_time ON seen (seen_ms);
