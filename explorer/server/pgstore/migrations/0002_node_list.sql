-- Schema 2: columns that GET /api/v1/nodes filters and pages on.
--
-- last_seen is when the node last sent a request as far as any replica
-- stored it (raised by TouchNodes, never lowered); the record's own
-- last_seen is kept for what UpdateNode writes, and a reader takes the
-- later of the two. free_* are the node's free units
-- (server.NodeRecord.Units: total − system reserve − reserved by
-- workloads, each step floored at zero), written with every record.

alter table nodes
	add column last_seen timestamptz,
	add column free_cru  double precision not null default 0,
	add column free_mru  double precision not null default 0,
	add column free_sru  double precision not null default 0,
	add column free_hru  double precision not null default 0;

-- Backfill from the records, with the rule of server.NodeRecord.Units:
-- capacity and reserve from the stats when there are stats, else from the
-- reported capacity; reserved by workloads from the stats.
update nodes n set
	last_seen = (n.record->>'last_seen')::timestamptz,
	free_cru = greatest(greatest(coalesce((c.cap->'total'->>'cru')::float8, 0) - coalesce((c.cap->'reserved'->>'cru')::float8, 0), 0) - coalesce((c.used->>'cru')::float8, 0), 0),
	free_mru = greatest(greatest(coalesce((c.cap->'total'->>'mru')::float8, 0) - coalesce((c.cap->'reserved'->>'mru')::float8, 0), 0) - coalesce((c.used->>'mru')::float8, 0), 0),
	free_sru = greatest(greatest(coalesce((c.cap->'total'->>'sru')::float8, 0) - coalesce((c.cap->'reserved'->>'sru')::float8, 0), 0) - coalesce((c.used->>'sru')::float8, 0), 0),
	free_hru = greatest(greatest(coalesce((c.cap->'total'->>'hru')::float8, 0) - coalesce((c.cap->'reserved'->>'hru')::float8, 0), 0) - coalesce((c.used->>'hru')::float8, 0), 0)
from (select id,
		coalesce(record->'stats'->'capacity', record->'capacity') as cap,
		record->'stats'->'used' as used
	from nodes) c
where c.id = n.id;

alter table nodes alter column last_seen set not null;
