-- Schema 3: when each reservation was delivered to its node, and an index
-- for a node's reservations, the last submitted first.
--
-- seq is the node's event that created the reservation; delivered_at is
-- when the node first polled from a cursor at or past it (it had stored the
-- reservation). Reservations of earlier schemas get seq 0: the node's next poll
-- marks them delivered at that time (earlier schemas did not keep when it was).
alter table reservations
	add column seq bigint not null default 0,
	add column delivered_at timestamptz;
create index reservations_undelivered on reservations (node_id, seq) where delivered_at is null;

-- A node's reservations, the last submitted first (the explorer's node page).
create index reservations_node_seq on reservations (node_id, seq desc);
