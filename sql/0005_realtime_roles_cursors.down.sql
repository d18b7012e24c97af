DROP TABLE IF EXISTS public.realtime_cursors;
DROP TRIGGER IF EXISTS hub_roles_notify ON public.dentists;
DROP TRIGGER IF EXISTS hub_roles_notify ON public.user_roles;
DROP FUNCTION IF EXISTS public.hub_roles_notify();
