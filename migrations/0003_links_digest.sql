-- A digest of each guest's guest_links rows (path, object id) as unify last
-- wrote them, so that a re-run which finds exactly the same links need not
-- read the rows back. NULL: not known (a run sets it to NULL in the same
-- transaction as its first change to the guest's rows).
ALTER TABLE guests ADD COLUMN links_digest BLOB;
