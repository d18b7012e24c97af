-- Notifications reach the user's `notifications:user_id=` channel on every
-- hub process: NOTIFY carries the row's id, the listener reads the row.
CREATE FUNCTION public.on_notification() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('hub_notifications', json_build_object('id', NEW.id, 'user_id', NEW.user_id)::text);
  RETURN NULL;
END $$;

CREATE TRIGGER notifications_created
  AFTER INSERT ON public.notifications
  FOR EACH ROW EXECUTE FUNCTION public.on_notification();
