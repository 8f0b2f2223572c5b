-- unifs catalog, schema 1. The filesystem is the truth; this is its index.

-- Store-wide settings fixed at creation (format_version, ignore_mtime).
CREATE TABLE config (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- One row per unify / gc run. Objects and guest paths point at the run that added them.
CREATE TABLE runs (
    id            INTEGER PRIMARY KEY,
    command       TEXT NOT NULL,
    started_at    INTEGER NOT NULL,            -- unix seconds
    finished_at   INTEGER,                     -- NULL: still running or killed
    files_scanned INTEGER NOT NULL DEFAULT 0,
    bytes_hashed  INTEGER NOT NULL DEFAULT 0,
    files_linked  INTEGER NOT NULL DEFAULT 0,
    bytes_saved   INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE guests (
    id       INTEGER PRIMARY KEY,
    name     TEXT NOT NULL UNIQUE,
    path     BLOB NOT NULL UNIQUE,             -- absolute backing directory
    added_run INTEGER NOT NULL REFERENCES runs(id),
    last_run INTEGER REFERENCES runs(id)
);

-- One row per object id: the metadata its header covers and its plain content hash.
CREATE TABLE objects (
    id           TEXT PRIMARY KEY,             -- 64 hex digits, = file name in objects/
    content_hash TEXT NOT NULL,                -- blake3 of the content alone
    size         INTEGER NOT NULL,
    mode         INTEGER NOT NULL,             -- st_mode & 07777
    uid          INTEGER NOT NULL,
    gid          INTEGER NOT NULL,
    mtime_sec    INTEGER NOT NULL,
    mtime_nsec   INTEGER NOT NULL,
    added_run    INTEGER NOT NULL REFERENCES runs(id)
);
CREATE INDEX objects_by_key ON objects(size, mode, uid, gid);

-- Each file of an object: copy 0 is objects/ab/cdef…, copy N is …cdef.N
-- (a new copy starts when one reaches the filesystem's link limit).
CREATE TABLE object_files (
    object_id TEXT NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
    copy      INTEGER NOT NULL,
    dev       INTEGER NOT NULL,
    ino       INTEGER NOT NULL,
    PRIMARY KEY (object_id, copy)
);
CREATE INDEX object_files_by_inode ON object_files(dev, ino);

-- Which guest path unify linked to which object (as of the last run that saw it).
CREATE TABLE guest_links (
    guest_id  INTEGER NOT NULL REFERENCES guests(id) ON DELETE CASCADE,
    path      BLOB NOT NULL,                   -- relative to the guest dir, no leading /
    object_id TEXT NOT NULL REFERENCES objects(id) ON DELETE CASCADE,
    run_id    INTEGER NOT NULL REFERENCES runs(id),
    PRIMARY KEY (guest_id, path)
);
CREATE INDEX guest_links_by_object ON guest_links(object_id);

-- Hash cache: a file whose (dev, ino, size, mtime, ctime) is unchanged is not read again.
CREATE TABLE hash_cache (
    dev          INTEGER NOT NULL,
    ino          INTEGER NOT NULL,
    size         INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    ctime_ns     INTEGER NOT NULL,
    object_id    TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    PRIMARY KEY (dev, ino)
);
