-- Reminders are computed from the appointments when they are read, not
-- written as rows by every booking. A booking's transaction no longer plans
-- anything: an appointment's reminders follow from its own row (start,
-- status, created_at), its dentist's time zone and the offsets in force. What
-- is stored is what happened: one row per reminder sent or missed, and
-- inserting that row is how a process claims the reminder (the key is the
-- reminder itself), so each goes out once however many hubs run.

-- What happened to each reminder that fell due: sent, or missed (too late to
-- be useful). The key is the reminder: a reschedule makes new reminders (new
-- due times); moving back to a time already reminded of sends nothing again.
CREATE TABLE public.reminder_log (
  appointment_id uuid NOT NULL REFERENCES public.appointments(id) ON DELETE CASCADE,
  label          text NOT NULL,
  due_at         timestamptz NOT NULL,
  id             uuid NOT NULL,          -- the id appointment_reminders showed while it was pending
  status         text NOT NULL CHECK (status IN ('sent', 'missed')),
  sent_at        timestamptz,
  created_at     timestamptz NOT NULL,   -- when the reminder was planned
  PRIMARY KEY (appointment_id, label, due_at)
);

-- When an appointment's reminders were last planned, if later than its
-- created_at: a change of its time or status plans them anew from that
-- moment, and only reminders due after it count.
CREATE TABLE public.reminder_plans (
  appointment_id uuid PRIMARY KEY REFERENCES public.appointments(id) ON DELETE CASCADE,
  planned_at     timestamptz NOT NULL
);

-- How far the senders have looked: every reminder due up to swept_to has been
-- sent or marked missed, except ones whose transaction committed later; each
-- pass looks back its max-late interval behind swept_to for those.
CREATE TABLE public.reminder_sweep (
  one      boolean PRIMARY KEY DEFAULT true CHECK (one),
  swept_to timestamptz NOT NULL
);

-- The reminders 0009 planned: sent and missed ones are kept, pending ones
-- follow from their appointments from now on. An appointment is planned from
-- just before its first pending reminder, so every pending one stays due and
-- none that 0009 left out appears; one without any pending is planned from now.
INSERT INTO public.reminder_log (appointment_id, label, due_at, id, status, sent_at, created_at)
SELECT appointment_id, label, due_at, id, status, sent_at, created_at
FROM public.appointment_reminders WHERE status <> 'pending';
INSERT INTO public.reminder_plans (appointment_id, planned_at)
SELECT a.id, least(now(), min(r.due_at) - interval '1 microsecond')
FROM public.appointments a
LEFT JOIN public.appointment_reminders r ON r.appointment_id = a.id AND r.status = 'pending'
WHERE a.status IN ('pending', 'confirmed')
GROUP BY a.id;
INSERT INTO public.reminder_sweep (swept_to)
SELECT least(now(), min(due_at)) FROM public.appointment_reminders WHERE status = 'pending';

-- An offset counts for reminders due after it came into force (the hub
-- rewrites the offsets when REMINDER_OFFSETS changes); those of 0009 were
-- planned already.
ALTER TABLE public.reminder_offsets ADD COLUMN since timestamptz NOT NULL DEFAULT now();
UPDATE public.reminder_offsets SET since = '-infinity';

DROP TRIGGER appointments_planned ON public.appointments;
DROP TABLE public.appointment_reminders;
DROP FUNCTION public.reminder_times(timestamptz, text);

-- An appointment's reminders: the ones that went out or were missed, and the
-- pending ones, computed. `Nd` falls on the same local time N days before in
-- the dentist's zone (so 23 or 25 hours across a clock change), then the
-- offset's minutes earlier; a reminder already due when the appointment was
-- planned, or when its offset came into force, is not one. Runs as the
-- caller: the appointments' policies decide.
CREATE VIEW public.appointment_reminders WITH (security_invoker = true) AS
SELECT l.id, l.appointment_id, l.label, l.due_at, l.status, l.sent_at, l.created_at
FROM public.reminder_log l
UNION ALL
SELECT md5(concat_ws('/', a.id, o.label, to_char(t.due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')))::uuid,
       a.id, o.label, t.due_at, 'pending', NULL::timestamptz, t.planned_at
FROM public.appointments a
JOIN public.dentists d ON d.id = a.dentist_id
LEFT JOIN public.reminder_plans p ON p.appointment_id = a.id
CROSS JOIN public.reminder_offsets o
CROSS JOIN LATERAL (
  SELECT ((a.appointment_date AT TIME ZONE d.timezone) - make_interval(days => o.days)) AT TIME ZONE d.timezone
         - make_interval(mins => o.minutes) AS due_at,
         greatest(a.created_at, p.planned_at, o.since) AS planned_at
) t
WHERE a.status IN ('pending', 'confirmed') AND t.due_at > t.planned_at
  AND NOT EXISTS (SELECT 1 FROM public.reminder_log l
                  WHERE l.appointment_id = a.id AND l.label = o.label AND l.due_at = t.due_at);

-- Plan an existing appointment's reminders anew from now (a reschedule, a
-- status change).
CREATE OR REPLACE FUNCTION public.plan_reminders(_appointment_id uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  INSERT INTO public.reminder_plans (appointment_id, planned_at) VALUES (_appointment_id, now())
  ON CONFLICT (appointment_id) DO UPDATE SET planned_at = excluded.planned_at;
END $$;

-- A change of an appointment: the calendar feeds' SEQUENCE, and its reminders
-- planned anew when its time or status changed. A new appointment needs
-- nothing: its reminders follow from its row.
CREATE OR REPLACE FUNCTION public.on_appointment_planned() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  IF (OLD.appointment_date, OLD.duration_minutes, OLD.status, OLD.appointment_type)
       IS DISTINCT FROM (NEW.appointment_date, NEW.duration_minutes, NEW.status, NEW.appointment_type) THEN
    INSERT INTO public.appointment_revisions (appointment_id, sequence) VALUES (NEW.id, 1)
    ON CONFLICT (appointment_id) DO UPDATE SET sequence = appointment_revisions.sequence + 1;
  END IF;
  IF (OLD.appointment_date, OLD.status) IS DISTINCT FROM (NEW.appointment_date, NEW.status) THEN
    PERFORM public.plan_reminders(NEW.id);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER appointments_planned
  AFTER UPDATE OF appointment_date, duration_minutes, status, appointment_type ON public.appointments
  FOR EACH ROW
  EXECUTE FUNCTION public.on_appointment_planned();

-- Send what is due, each reminder once across every process: the insert into
-- reminder_log is the claim (a second process's insert waits for the first's
-- commit, then finds the key taken), and the notification, the webhook event
-- and that row commit together. One later than `_max_late`, or whose
-- appointment has started, is logged `missed` instead: a reminder after the
-- fact helps no one. Due means due in (swept_to - _max_late, now]; the
-- candidates are each dentist's appointments starting that far ahead
-- (appointments_dentist_date), with two hours' margin for clock changes.
CREATE OR REPLACE FUNCTION public.send_due_reminders(_limit integer, _max_late interval)
RETURNS TABLE (id uuid, status text, late_seconds double precision)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public SET jit = off AS $$
DECLARE
  _from timestamptz := coalesce((SELECT s.swept_to FROM public.reminder_sweep s), now()) - _max_late;
  _r record;
  _count integer := 0;
  _last timestamptz;
  _outcome text;
BEGIN
  FOR _r IN
    SELECT r.id AS reminder_id, r.label, r.due_at, r.created_at AS planned_at, a.id AS appointment_id,
           a.patient_id, a.dentist_id, a.appointment_date, a.duration_minutes, a.appointment_type,
           a.status AS appointment_status, d.name AS dentist_name, d.timezone
    FROM public.dentists d
    CROSS JOIN public.reminder_offsets o
    CROSS JOIN LATERAL (
      SELECT a.* FROM public.appointments a
      WHERE a.dentist_id = d.id AND a.status IN ('pending', 'confirmed')
        AND a.appointment_date > ((_from + make_interval(mins => o.minutes)) AT TIME ZONE d.timezone
                                  + make_interval(days => o.days)) AT TIME ZONE d.timezone - interval '2 hours'
        AND a.appointment_date <= ((now() + make_interval(mins => o.minutes)) AT TIME ZONE d.timezone
                                   + make_interval(days => o.days)) AT TIME ZONE d.timezone + interval '2 hours'
      OFFSET 0  -- one index scan per dentist and offset
    ) a
    CROSS JOIN LATERAL (
      SELECT * FROM public.appointment_reminders r
      WHERE r.appointment_id = a.id AND r.label = o.label AND r.status = 'pending'
      OFFSET 0  -- the view for one appointment at a time, not all of it
    ) r
    WHERE r.due_at > _from AND r.due_at <= now()
    ORDER BY r.due_at, r.appointment_id, r.label
    LIMIT _limit
  LOOP
    _count := _count + 1;
    _last := _r.due_at;
    _outcome := CASE WHEN now() > _r.due_at + _max_late OR now() >= _r.appointment_date THEN 'missed' ELSE 'sent' END;
    INSERT INTO public.reminder_log (appointment_id, label, due_at, id, status, sent_at, created_at)
    VALUES (_r.appointment_id, _r.label, _r.due_at, _r.reminder_id, _outcome,
            CASE WHEN _outcome = 'sent' THEN now() END, _r.planned_at)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
      CONTINUE;  -- another process claimed it
    END IF;
    id := _r.reminder_id; status := _outcome; late_seconds := extract(epoch FROM now() - _r.due_at);
    IF _outcome = 'missed' THEN
      RETURN NEXT;
      CONTINUE;
    END IF;
    INSERT INTO public.notifications (user_id, kind, title, body, data)
    VALUES (_r.patient_id, 'appointment_reminder', 'Appointment reminder',
            format('Your %s with %s is on %s (%s).', replace(_r.appointment_type, '_', ' '), _r.dentist_name,
                   to_char(_r.appointment_date AT TIME ZONE _r.timezone, 'Dy DD Mon YYYY HH24:MI'), _r.timezone),
            jsonb_build_object('appointment_id', _r.appointment_id, 'dentist_id', _r.dentist_id,
                               'appointment_date', _r.appointment_date, 'reminder_id', _r.reminder_id,
                               'offset', _r.label));
    PERFORM public.webhook_emit('reminder.due', jsonb_build_object(
      'reminder_id', _r.reminder_id, 'offset', _r.label, 'due_at', _r.due_at,
      'appointment', jsonb_build_object('id', _r.appointment_id, 'patient_id', _r.patient_id,
        'dentist_id', _r.dentist_id, 'appointment_date', _r.appointment_date,
        'duration_minutes', _r.duration_minutes, 'appointment_type', _r.appointment_type,
        'status', _r.appointment_status)));
    RETURN NEXT;
  END LOOP;
  -- A full batch leaves the rest of the window to the next one.
  INSERT INTO public.reminder_sweep AS s (swept_to) VALUES (CASE WHEN _count < _limit THEN now() ELSE _last END)
  ON CONFLICT (one) DO UPDATE SET swept_to = greatest(s.swept_to, excluded.swept_to);
END $$;

-- The hub reads and writes these as the owner; through the API, a user sees
-- the reminders of the appointments they may see (appointment_reminders runs
-- as the caller, so it needs to read the offsets and plans as well).
ALTER TABLE public.reminder_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.reminder_plans ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.reminder_sweep ENABLE ROW LEVEL SECURITY;
CREATE POLICY reminder_log_select ON public.reminder_log FOR SELECT
  USING (EXISTS (SELECT 1 FROM public.appointments a WHERE a.id = appointment_id));
CREATE POLICY reminder_plans_select ON public.reminder_plans FOR SELECT
  USING (EXISTS (SELECT 1 FROM public.appointments a WHERE a.id = appointment_id));
CREATE POLICY reminder_offsets_select ON public.reminder_offsets FOR SELECT USING (true);
