-- Read-only views for backup tools and scripts. Their columns are a stable
-- interface (docs/store-format.md): later migrations may add columns, never
-- change or remove these.

-- Every guest path that links a store object (as of the last unify run that saw it).
CREATE VIEW guest_files AS
SELECT g.name         AS guest,
       CAST(l.path AS TEXT) AS path,
       'file'         AS type,
       o.mode         AS mode,
       o.uid          AS uid,
       o.gid          AS gid,
       o.mtime_sec    AS mtime,
       o.size         AS size,
       o.id           AS object_id,
       l.run_id       AS run
FROM guest_links l
JOIN guests g ON g.id = l.guest_id
JOIN objects o ON o.id = l.object_id;

-- Every object file, with its path relative to the store root.
CREATE VIEW store_objects AS
SELECT o.id AS object_id,
       f.copy AS copy,
       'objects/' || substr(o.id, 1, 2) || '/' || substr(o.id, 3)
           || CASE WHEN f.copy = 0 THEN '' ELSE '.' || f.copy END AS path,
       o.size AS size,
       o.content_hash AS content_hash,
       o.added_run AS added_run
FROM objects o
JOIN object_files f ON f.object_id = o.id;

-- Unify runs, numbered.
CREATE VIEW unify_runs AS
SELECT id AS run, command, started_at, finished_at, files_scanned, bytes_hashed,
       files_linked, bytes_saved
FROM runs;
