-- Realtime: role changes reach every hub process at once, and catch-up for
-- clients that rejoin without saying where they were.

-- A user's application roles changed, here or in psql: every hub process
-- forgets its cached roles for them and re-authorizes their open channels.
-- dentists.user_id counts too: it decides which dentist's rows a user sees.
CREATE FUNCTION public.hub_roles_notify() RETURNS trigger
LANGUAGE plpgsql SET search_path = public AS $$
BEGIN
  IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.user_id IS NOT NULL THEN
    PERFORM pg_notify('hub_roles', NEW.user_id::text);
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.user_id IS NOT NULL
     AND (TG_OP = 'DELETE' OR OLD.user_id IS DISTINCT FROM NEW.user_id) THEN
    PERFORM pg_notify('hub_roles', OLD.user_id::text);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER hub_roles_notify AFTER INSERT OR UPDATE OR DELETE ON public.user_roles
  FOR EACH ROW EXECUTE FUNCTION public.hub_roles_notify();
CREATE TRIGGER hub_roles_notify AFTER INSERT OR DELETE OR UPDATE OF user_id ON public.dentists
  FOR EACH ROW EXECUTE FUNCTION public.hub_roles_notify();

-- Per signed-in user and topic, the last version the hub sent them of each
-- dentist (web/catchup.py). `away` counts that user's channels on the topic
-- that ended and have not rejoined. Pruned with realtime_events' retention.
CREATE TABLE public.realtime_cursors (
  user_id    uuid NOT NULL,
  topic      text NOT NULL,
  dentist_id uuid NOT NULL,
  version    bigint NOT NULL,
  away       integer NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, topic, dentist_id)
);
CREATE INDEX realtime_cursors_updated_at ON public.realtime_cursors (updated_at);
ALTER TABLE public.realtime_cursors ENABLE ROW LEVEL SECURITY;  -- the hub's own: no policy, no client access
