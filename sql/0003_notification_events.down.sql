DROP TRIGGER IF EXISTS notifications_created ON public.notifications;
DROP FUNCTION IF EXISTS public.on_notification();
