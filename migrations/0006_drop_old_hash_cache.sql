-- Hash-cache rows made by older builds may vouch for content a file no
-- longer has: before schema 6 unify also kept the hash of a file open for
-- writing (writes through a dirty shared mapping change neither mtime nor
-- ctime) and of one changed within a coarse ctime tick. Trusting such a row
-- links the file to its old content, losing the writes. The rows go; the
-- first run after the upgrade hashes every file again.
DELETE FROM hash_cache;
