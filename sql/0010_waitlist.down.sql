DROP FUNCTION IF EXISTS public.waitlist_offer(uuid, jsonb, integer);
DROP FUNCTION IF EXISTS public.waitlist_settle(uuid, uuid);
DROP FUNCTION IF EXISTS public.waitlist_matches(public.waitlist_entries, timestamptz, integer, text);
DROP TABLE IF EXISTS public.waitlist_offers;
DROP TABLE IF EXISTS public.waitlist_entries;
