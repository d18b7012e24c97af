-- Nothing to undo: the membership 0008 may have granted is harmless without
-- the hub, and may have existed before (Supabase grants it to `postgres`).
SELECT 1;
