-- Schema 7: reservation updates. The digests of the versions an update
-- replaced stay taken (a replay of an old version is refused) until the
-- reservation goes.
create table superseded_digests (
	digest text primary key,
	id     text not null references reservations (id) on delete cascade
);
create index superseded_digests_id on superseded_digests (id);
