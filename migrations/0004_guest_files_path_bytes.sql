-- guest_files.path is a CAST to TEXT, which for a path that is not UTF-8
-- holds bytes clients that check UTF-8 refuse (Python's sqlite3 fails the
-- whole query). The view keeps its columns (a stable interface) and gains
-- path_bytes: the path's exact bytes, as a BLOB.
DROP VIEW guest_files;
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
       l.run_id       AS run,
       l.path         AS path_bytes
FROM guest_links l
JOIN guests g ON g.id = l.guest_id
JOIN objects o ON o.id = l.object_id;
