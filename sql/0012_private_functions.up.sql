-- The API roles could call the hub's hold-expiry functions: expire_holds
-- through PUBLIC's default EXECUTE (0002 never took it away), and, on
-- Supabase, expire_holds_overlapping through the default privileges that
-- grant anon and authenticated every new function (0006 revoked PUBLIC only).
-- Only the hub calls them (sql/README.md: a function is private unless a
-- policy needs it).
REVOKE EXECUTE ON FUNCTION public.expire_holds(uuid, interval),
  public.expire_holds_overlapping(uuid, timestamptz, timestamptz) FROM PUBLIC, anon, authenticated;
