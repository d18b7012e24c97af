-- Reverses 0012_private_functions (the grants Supabase's default privileges gave are not restored).
GRANT EXECUTE ON FUNCTION public.expire_holds(uuid, interval) TO PUBLIC;
