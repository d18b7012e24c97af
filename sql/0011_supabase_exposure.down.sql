-- Reverses 0011_supabase_exposure (the grants Supabase's default privileges gave are not restored).
ALTER TABLE public.schema_migrations DISABLE ROW LEVEL SECURITY;
GRANT EXECUTE ON FUNCTION public.log_realtime_event(uuid, text, text, uuid, jsonb) TO PUBLIC;
