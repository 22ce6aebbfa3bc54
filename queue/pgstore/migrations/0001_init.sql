-- pgstore schema, version 1. Applied by pgstore.Open inside the store's own
-- schema (search_path is set to it), under an advisory lock.

-- One row per queued message: the envelope and routing attributes. IDs use
-- the "C" collation so that PostgreSQL orders them byte by byte, like Go.
CREATE TABLE messages (
	id              text COLLATE "C" PRIMARY KEY,
	sender          text NOT NULL,        -- MAIL FROM, "" for <>
	mail            jsonb NOT NULL,       -- smtp.MailOptions
	tenant          text NOT NULL,
	source_pool     text NOT NULL,
	tags            text[] NOT NULL,
	metadata        jsonb NOT NULL,
	priority        integer NOT NULL,
	created         timestamptz NOT NULL,
	not_before      timestamptz NOT NULL,
	expires         timestamptz NOT NULL,
	size            bigint NOT NULL,      -- body size in bytes
	chunk_size      integer NOT NULL,     -- size of every body chunk but the last
	idempotency_key text NOT NULL,
	is_dsn          boolean NOT NULL
);
CREATE INDEX messages_tenant ON messages (tenant, id);
CREATE INDEX messages_created ON messages (created);

-- One row per (message, recipient domain): the unit that is claimed,
-- leased, attempted and rescheduled. priority repeats messages.priority so
-- that the claim index covers the claim order.
CREATE TABLE deliveries (
	message_id    text COLLATE "C" NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
	idx           integer NOT NULL,
	priority      integer NOT NULL,
	domain        text NOT NULL,
	recipients    jsonb NOT NULL,         -- array of recipients with their states
	next_attempt  timestamptz NOT NULL,
	attempts      integer NOT NULL,
	last_attempt  timestamptz NOT NULL,
	held          boolean NOT NULL,
	warned        boolean NOT NULL,
	done          boolean NOT NULL,       -- every recipient final
	lease_owner   text NOT NULL,
	lease_token   text,                   -- NULL: no current lease
	lease_expires timestamptz NOT NULL,
	PRIMARY KEY (message_id, idx)
);
-- Claim order over the deliveries that can become ready.
CREATE INDEX deliveries_ready ON deliveries (priority DESC, next_attempt, message_id, idx)
	WHERE NOT done AND NOT held;
-- Inspection by destination.
CREATE INDEX deliveries_domain ON deliveries (domain, message_id);

-- Message bodies in chunks of messages.chunk_size bytes, seq from 0.
CREATE TABLE bodies (
	message_id text COLLATE "C" NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
	seq        integer NOT NULL,
	data       bytea NOT NULL,
	PRIMARY KEY (message_id, seq)
);

-- Idempotency records; they outlive their messages.
CREATE TABLE idempotency (
	tenant     text NOT NULL,
	key        text NOT NULL,
	message_id text COLLATE "C" NOT NULL,
	created    timestamptz NOT NULL,
	PRIMARY KEY (tenant, key)
);
CREATE INDEX idempotency_created ON idempotency (created);
