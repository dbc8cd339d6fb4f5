-- Schema 1 of the explorer on PostgreSQL (see doc.go).

-- A node and its event sequence: last_seq is the last sequence number given
-- to one of its events (update ... returning, under the row lock, in the
-- transaction that inserts the event: gapless, committed in order);
-- low_seq is the low-water mark, the last pruned sequence number.
create table nodes (
	id       text primary key,
	record   jsonb not null,
	last_seq bigint not null default 0,
	low_seq  bigint not null default 0
);

-- Reservations as submitted (body: the JSON published to the node, byte
-- for byte: the user's signature covers the raw data inside it) with the
-- node's latest signed result.
create table reservations (
	id        text primary key,
	node_id   text not null references nodes (id),
	user_id   text not null,
	digest    text not null unique,
	created   timestamptz not null,
	expires   timestamptz not null,
	to_delete boolean not null default false,
	version   bigint not null,
	body      bytea not null,
	result    bytea
);
create index reservations_user on reservations (user_id, created, id);
create index reservations_node on reservations (node_id, id);

-- Each node's event stream.
create table events (
	node_id     text not null references nodes (id),
	seq         bigint not null,
	created     timestamptz not null default clock_timestamp(),
	reservation bytea not null,
	primary key (node_id, seq)
);
create index events_created on events (created);
