-- Schema 4: a user's active reservations (not marked for deletion), by
-- expiry, so that the per-user quota counts them without reading the
-- user's expired ones.
create index reservations_user_active on reservations (user_id, expires) where not to_delete;
