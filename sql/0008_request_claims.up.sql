-- The hub reads for a user as that user, the way PostgREST does: inside the
-- transaction it switches to the role `authenticated` (or `anon`) with the
-- user's claims in `request.jwt.claims` (hub/db.py as_caller), so the
-- policies bound what it returns. Its login must be allowed to switch to
-- those roles: a superuser is, and so is Supabase's `postgres`; any other
-- login that can grant them gets the membership here. A login that can
-- neither switch nor grant stops the migration with what to run instead.
DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
    BEGIN
      EXECUTE format('SET LOCAL ROLE %I', r);
      RESET ROLE;
    EXCEPTION WHEN insufficient_privilege THEN
      BEGIN
        EXECUTE format('GRANT %I TO %I', r, current_user);
      EXCEPTION WHEN insufficient_privilege THEN
        RAISE EXCEPTION 'the hub''s database user % cannot switch to the role %', current_user, r
          USING HINT = format('as a superuser run: GRANT %I TO %I; then migrate again', r, current_user);
      END;
    END;
  END LOOP;
END $$;
