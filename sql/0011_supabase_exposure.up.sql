-- On Supabase, PostgREST serves the public schema to the anon and authenticated
-- roles, and default privileges grant them EXECUTE on every new function and
-- all rights on every new table. The hub's write functions are for the hub
-- alone: without this, anyone with the project's anon key could forge
-- realtime events (log_realtime_event is SECURITY DEFINER) through /rest/v1/rpc.
-- Trigger functions cannot be called that way; has_role(), is_dentist_user()
-- and add_minutes() must stay callable because policies and constraints use them.
REVOKE EXECUTE ON FUNCTION public.log_realtime_event(uuid, text, text, uuid, jsonb) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION public.log_realtime_event(uuid, text, text, uuid, jsonb),
  public.expire_holds(uuid, interval), public.hub_book(uuid, jsonb), public.hub_hold(uuid, jsonb),
  public.hub_extend_hold(uuid, jsonb), public.hub_write(uuid, bigint, text, jsonb, jsonb),
  public.hub_write_many(jsonb) FROM anon, authenticated;
-- The migration record is the hub's: row-level security with no policy hides it from the API roles.
ALTER TABLE public.schema_migrations ENABLE ROW LEVEL SECURITY;
