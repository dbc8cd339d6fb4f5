-- Schema 6: what nodes say of their life and what owners ask of their
-- containers (server.FleetStore).

-- A node's availability record (server.Availability as JSON): the spans
-- its signed heartbeats cover over the last 30 days, its boot, its reboots.
create table node_availability (
	node_id text primary key references nodes (id),
	record  jsonb not null
);

-- Owner log requests (server.LogRecord) and the node's sealed answers,
-- kept until expires.
create table log_requests (
	name     text primary key,
	node_id  text not null,
	user_id  text not null,
	created  timestamptz not null,
	expires  timestamptz not null,
	answered timestamptz,
	record   jsonb not null
);
create index log_requests_pending on log_requests (node_id, created) where answered is null;
create index log_requests_user on log_requests (user_id, expires);
create index log_requests_expires on log_requests (expires);
