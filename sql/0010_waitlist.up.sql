-- The waitlist: patients waiting for a slot, and the offers made to them.
--
-- When time frees up, the dentist's actor passes the slots now free to
-- waitlist_offer() under the dentist's row lock (as every writer holds it).
-- Entries are served in the order they joined: each gets the earliest slot
-- it matches, held in its patient's name (a slot_reservations row, so the
-- hold machinery expires it and others see it busy-tentative). Booking with
-- that hold accepts; declining, leaving or expiry frees it again, and the
-- same pass offers it to the next in line. An entry has one live offer at a
-- time, even with several dentists' passes at once, and is never offered the
-- same slot twice (unique indexes); and the
-- hold's exclusion constraint keeps one slot from going to two patients,
-- whichever process runs the pass.

CREATE TABLE public.waitlist_entries (
  id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  patient_id       uuid NOT NULL REFERENCES auth.users(id) ON DELETE CASCADE,
  dentist_id       uuid REFERENCES public.dentists(id) ON DELETE CASCADE,  -- NULL: any dentist
  appointment_type text NOT NULL,
  earliest_date    date NOT NULL,                 -- the dentist's local dates
  latest_date      date NOT NULL,
  weekdays         text[],                        -- {monday, ...}; NULL: any day
  time_ranges      text[],                        -- {09:00-12:00, ...} local; NULL: any time
  status           text NOT NULL DEFAULT 'waiting' CHECK (status IN ('waiting', 'booked')),
  appointment_id   uuid,                          -- the booking that accepted an offer
  created_by       uuid,
  created_at       timestamptz NOT NULL DEFAULT clock_timestamp(),
  CHECK (latest_date >= earliest_date)
);
CREATE INDEX waitlist_entries_queue ON public.waitlist_entries (created_at, id) WHERE status = 'waiting';
CREATE INDEX waitlist_entries_patient ON public.waitlist_entries (patient_id, created_at);

CREATE TABLE public.waitlist_offers (
  id               uuid PRIMARY KEY,              -- the hold's id (slot_reservations.id)
  entry_id         uuid NOT NULL REFERENCES public.waitlist_entries(id) ON DELETE CASCADE,
  dentist_id       uuid NOT NULL REFERENCES public.dentists(id) ON DELETE CASCADE,
  slot_time        timestamptz NOT NULL,
  appointment_type text NOT NULL,
  expires_at       timestamptz NOT NULL,
  outcome          text CHECK (outcome IN ('accepted', 'declined', 'expired', 'withdrawn')),  -- NULL: live
  created_at       timestamptz NOT NULL DEFAULT now(),
  ended_at         timestamptz,
  UNIQUE (entry_id, dentist_id, slot_time)
);
CREATE UNIQUE INDEX waitlist_offers_live ON public.waitlist_offers (entry_id) WHERE outcome IS NULL;
CREATE INDEX waitlist_offers_dentist_live ON public.waitlist_offers (dentist_id) WHERE outcome IS NULL;

-- Whether a slot starting at _start for _minutes suits the entry, in the dentist's time zone.
CREATE FUNCTION public.waitlist_matches(_e public.waitlist_entries, _start timestamptz, _minutes integer, _tz text)
RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT (_start AT TIME ZONE _tz)::date BETWEEN _e.earliest_date AND _e.latest_date
     AND (_e.weekdays IS NULL OR to_char(_start AT TIME ZONE _tz, 'FMday') = ANY (_e.weekdays))
     AND (_e.time_ranges IS NULL OR EXISTS (
       SELECT 1 FROM unnest(_e.time_ranges) r
       WHERE (_start AT TIME ZONE _tz)::time >= split_part(r, '-', 1)::time
         AND extract(epoch FROM (_start AT TIME ZONE _tz)::time) + _minutes * 60
             <= extract(epoch FROM split_part(r, '-', 2)::time)))
$$;

-- Close the live offers whose hold is gone (of one dentist, or one patient):
-- accepted when the patient booked that time with that dentist, else expired
-- or declined. Safe without the dentist's lock: a hold and the booking that
-- consumes it commit together.
CREATE FUNCTION public.waitlist_settle(_dentist uuid, _patient uuid)
RETURNS TABLE (offer_id uuid, entry_id uuid, outcome text)
LANGUAGE sql AS $$
  WITH gone AS (
    SELECT o.id, o.entry_id, e.patient_id, o.dentist_id, o.slot_time, o.expires_at
    FROM public.waitlist_offers o JOIN public.waitlist_entries e ON e.id = o.entry_id
    WHERE o.outcome IS NULL AND (_dentist IS NULL OR o.dentist_id = _dentist)
      AND (_patient IS NULL OR e.patient_id = _patient)
      AND NOT EXISTS (SELECT 1 FROM public.slot_reservations r WHERE r.id = o.id)
    FOR UPDATE OF o SKIP LOCKED
  ), judged AS (
    SELECT g.id, g.entry_id, a.id AS appointment_id,
           CASE WHEN a.id IS NOT NULL THEN 'accepted' WHEN g.expires_at <= now() THEN 'expired'
                ELSE 'declined' END AS outcome
    FROM gone g LEFT JOIN LATERAL (
      SELECT id FROM public.appointments a
      WHERE a.patient_id = g.patient_id AND a.dentist_id = g.dentist_id AND a.appointment_date = g.slot_time
        AND a.status <> 'cancelled' LIMIT 1) a ON true
  ), settled AS (
    UPDATE public.waitlist_offers o SET outcome = j.outcome, ended_at = now()
    FROM judged j WHERE o.id = j.id
    RETURNING o.id, o.entry_id, o.outcome
  ), booked AS (
    UPDATE public.waitlist_entries e SET status = 'booked', appointment_id = j.appointment_id
    FROM judged j WHERE e.id = j.entry_id AND j.outcome = 'accepted'
  )
  SELECT id, entry_id, outcome FROM settled
$$;

-- Offer freed slots to the waitlist. The caller holds the dentist's row lock.
-- _candidates: [{"start", "type", "duration", "minutes"}] — slots the actor
-- found free and bookable; "minutes" is the time the type blocks (with buffer).
CREATE FUNCTION public.waitlist_offer(_dentist uuid, _candidates jsonb, _offer_minutes integer)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = public AS $$
DECLARE
  _tz text;
  _e public.waitlist_entries;
  _c jsonb;
  _hold public.slot_reservations;
  _offers jsonb := '[]';
  _settled jsonb;
BEGIN
  SELECT timezone INTO _tz FROM public.dentists WHERE id = _dentist;
  SELECT coalesce(jsonb_agg(to_jsonb(s)), '[]') INTO _settled FROM public.waitlist_settle(_dentist, NULL) s;
  FOR _e IN
    SELECT e.* FROM public.waitlist_entries e
    WHERE e.status = 'waiting' AND (e.dentist_id IS NULL OR e.dentist_id = _dentist)
      AND e.appointment_type IN (SELECT c ->> 'type' FROM jsonb_array_elements(_candidates) c)
      AND NOT EXISTS (SELECT 1 FROM public.waitlist_offers o WHERE o.entry_id = e.id AND o.outcome IS NULL)
    ORDER BY e.created_at, e.id
  LOOP
    FOR _c IN
      SELECT c FROM jsonb_array_elements(_candidates) c
      WHERE c ->> 'type' = _e.appointment_type
        AND public.waitlist_matches(_e, (c ->> 'start')::timestamptz, (c ->> 'duration')::int, _tz)
        AND NOT EXISTS (SELECT 1 FROM public.waitlist_offers o WHERE o.entry_id = _e.id
                          AND o.dentist_id = _dentist AND o.slot_time = (c ->> 'start')::timestamptz)
      ORDER BY (c ->> 'start')::timestamptz
    LOOP
      BEGIN
        INSERT INTO public.slot_reservations (dentist_id, patient_id, slot_time, duration_minutes, appointment_type,
                                              expires_at)
        VALUES (_dentist, _e.patient_id, (_c ->> 'start')::timestamptz, (_c ->> 'minutes')::int, _e.appointment_type,
                now() + make_interval(mins => _offer_minutes))
        RETURNING * INTO _hold;
        INSERT INTO public.waitlist_offers (id, entry_id, dentist_id, slot_time, appointment_type, expires_at)
        VALUES (_hold.id, _e.id, _dentist, _hold.slot_time, _e.appointment_type, _hold.expires_at);
      EXCEPTION WHEN exclusion_violation OR unique_violation OR foreign_key_violation THEN
        -- The time went to an earlier entry in this pass; or another dentist's pass offered this
        -- entry a slot a moment ago (the live-offer index waits for that pass, then refuses); or the
        -- patient left the waitlist meanwhile. Passes take entries in one order, so none deadlock.
        CONTINUE;
      END;
      INSERT INTO public.notifications (user_id, kind, title, body, data)
      VALUES (_e.patient_id, 'waitlist_offer', 'A slot you were waiting for is free',
              format('%s on %s is held for you until %s: book it to accept', _e.appointment_type,
                     to_char(_hold.slot_time AT TIME ZONE _tz, 'YYYY-MM-DD HH24:MI'),
                     to_char(_hold.expires_at AT TIME ZONE _tz, 'HH24:MI')),
              jsonb_build_object('waitlist_id', _e.id, 'reservation_id', _hold.id, 'dentist_id', _dentist,
                                 'slot_time', _hold.slot_time, 'expires_at', _hold.expires_at,
                                 'appointment_type', _e.appointment_type));
      _offers := _offers || jsonb_build_object('waitlist_id', _e.id, 'reservation_id', _hold.id);
      EXIT;
    END LOOP;
  END LOOP;
  RETURN jsonb_build_object('offers', _offers, 'settled', _settled);
END $$;

ALTER TABLE public.waitlist_entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.waitlist_offers ENABLE ROW LEVEL SECURITY;
CREATE POLICY waitlist_entries_select ON public.waitlist_entries FOR SELECT
  USING (patient_id = auth.uid() OR public.has_role(auth.uid(), 'admin'));
CREATE POLICY waitlist_offers_select ON public.waitlist_offers FOR SELECT
  USING (public.has_role(auth.uid(), 'admin') OR EXISTS (
    SELECT 1 FROM public.waitlist_entries e WHERE e.id = entry_id AND e.patient_id = auth.uid()));
GRANT SELECT ON public.waitlist_entries, public.waitlist_offers TO authenticated;
-- The hub's alone (on Supabase, default privileges would let the API roles call them through /rest/v1/rpc).
REVOKE EXECUTE ON FUNCTION public.waitlist_offer(uuid, jsonb, integer), public.waitlist_settle(uuid, uuid),
  public.waitlist_matches(public.waitlist_entries, timestamptz, integer, text) FROM PUBLIC, anon, authenticated;
