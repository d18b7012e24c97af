DROP FUNCTION IF EXISTS public.hub_write_many(jsonb);
DROP FUNCTION IF EXISTS public.hub_write(uuid, bigint, text, jsonb, jsonb);
DROP FUNCTION IF EXISTS public.hub_extend_hold(uuid, jsonb);
DROP FUNCTION IF EXISTS public.hub_hold(uuid, jsonb);
DROP FUNCTION IF EXISTS public.hub_book(uuid, jsonb);
