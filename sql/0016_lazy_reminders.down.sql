-- Back to reminders planned as rows by a trigger (0009): the pending ones the
-- view computes become rows again, with the ids it showed.
ALTER VIEW public.appointment_reminders RENAME TO appointment_reminders_0016;
DROP TRIGGER appointments_planned ON public.appointments;

CREATE TABLE public.appointment_reminders (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  appointment_id uuid NOT NULL REFERENCES public.appointments(id) ON DELETE CASCADE,
  label          text NOT NULL,
  due_at         timestamptz NOT NULL,
  status         text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'missed')),
  sent_at        timestamptz,
  created_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (appointment_id, label, due_at)
);
CREATE INDEX appointment_reminders_due ON public.appointment_reminders (due_at) WHERE status = 'pending';
INSERT INTO public.appointment_reminders (id, appointment_id, label, due_at, status, sent_at, created_at)
SELECT id, appointment_id, label, due_at, status, sent_at, created_at FROM public.appointment_reminders_0016;
DROP VIEW public.appointment_reminders_0016;

CREATE FUNCTION public.reminder_times(_start timestamptz, _tz text) RETURNS TABLE (label text, due_at timestamptz)
LANGUAGE sql STABLE SET search_path = public AS $$
  SELECT o.label, ((_start AT TIME ZONE _tz) - make_interval(days => o.days)) AT TIME ZONE _tz
                  - make_interval(mins => o.minutes)
  FROM public.reminder_offsets o
$$;

CREATE OR REPLACE FUNCTION public.plan_reminders(_appointment_id uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  DELETE FROM public.appointment_reminders WHERE appointment_id = _appointment_id AND status = 'pending';
  INSERT INTO public.appointment_reminders (appointment_id, label, due_at)
  SELECT a.id, t.label, t.due_at
  FROM public.appointments a
  JOIN public.dentists d ON d.id = a.dentist_id
  CROSS JOIN LATERAL public.reminder_times(a.appointment_date, d.timezone) t
  WHERE a.id = _appointment_id AND a.status IN ('pending', 'confirmed') AND t.due_at > now()
  ON CONFLICT (appointment_id, label, due_at) DO NOTHING;
END $$;

CREATE OR REPLACE FUNCTION public.on_appointment_planned() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.status IN ('pending', 'confirmed') THEN
      INSERT INTO public.appointment_reminders (appointment_id, label, due_at)
      SELECT NEW.id, t.label, t.due_at
      FROM public.dentists d CROSS JOIN LATERAL public.reminder_times(NEW.appointment_date, d.timezone) t
      WHERE d.id = NEW.dentist_id AND t.due_at > now();
    END IF;
    RETURN NULL;
  END IF;
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
  AFTER INSERT OR UPDATE OF appointment_date, duration_minutes, status, appointment_type ON public.appointments
  FOR EACH ROW
  EXECUTE FUNCTION public.on_appointment_planned();

CREATE OR REPLACE FUNCTION public.send_due_reminders(_limit integer, _max_late interval)
RETURNS TABLE (id uuid, status text, late_seconds double precision)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  _r record;
BEGIN
  FOR _r IN
    SELECT r.id AS reminder_id, r.label, r.due_at, a.id AS appointment_id, a.patient_id, a.dentist_id,
           a.appointment_date, a.duration_minutes, a.appointment_type, a.status AS appointment_status,
           d.name AS dentist_name, d.timezone
    FROM public.appointment_reminders r
    JOIN public.appointments a ON a.id = r.appointment_id
    JOIN public.dentists d ON d.id = a.dentist_id
    WHERE r.status = 'pending' AND r.due_at <= now()
    ORDER BY r.due_at
    LIMIT _limit
    FOR UPDATE OF r SKIP LOCKED
  LOOP
    IF now() > _r.due_at + _max_late OR now() >= _r.appointment_date THEN
      UPDATE public.appointment_reminders SET status = 'missed' WHERE appointment_reminders.id = _r.reminder_id;
      id := _r.reminder_id; status := 'missed'; late_seconds := extract(epoch FROM now() - _r.due_at);
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
    UPDATE public.appointment_reminders SET status = 'sent', sent_at = now()
    WHERE appointment_reminders.id = _r.reminder_id;
    id := _r.reminder_id; status := 'sent'; late_seconds := extract(epoch FROM now() - _r.due_at);
    RETURN NEXT;
  END LOOP;
END $$;

DROP TABLE public.reminder_log, public.reminder_plans, public.reminder_sweep;
ALTER TABLE public.reminder_offsets DROP COLUMN since;
DROP POLICY IF EXISTS reminder_offsets_select ON public.reminder_offsets;
ALTER TABLE public.appointment_reminders ENABLE ROW LEVEL SECURITY;
CREATE POLICY appointment_reminders_select ON public.appointment_reminders FOR SELECT
  USING (EXISTS (SELECT 1 FROM public.appointments a WHERE a.id = appointment_id));
REVOKE EXECUTE ON FUNCTION public.reminder_times(timestamptz, text) FROM PUBLIC, anon, authenticated, service_role;
