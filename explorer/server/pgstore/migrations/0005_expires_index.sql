-- Schema 5: the expiry job (Store.Expire) deletes the reservations that
-- expired before a cutoff; this index finds them without a full scan.
create index reservations_expires on reservations (expires);
