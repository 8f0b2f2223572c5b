-- Which directory a guest's path named when unify last finished a run of
-- it (device, inode number, birth time in ns; NULL where the filesystem
-- does not say), so that a guest replaced under the same path (`rm -rf G;
-- cp -al H G`) is unified as a new one: its excluded trees are walked for
-- files a clone shares. NULL: not known (a catalog of an older unifs).
ALTER TABLE guests ADD COLUMN root_dev INTEGER;
ALTER TABLE guests ADD COLUMN root_ino INTEGER;
ALTER TABLE guests ADD COLUMN root_birth_ns INTEGER;
-- A digest of the guest's own hardlink groups that reach into its excluded
-- trees (or other stores' objects): inodes the walk of its other trees
-- finds with links it does not see, with their link counts, as a run that
-- walked the excluded trees too found them all the guest's. A re-run that
-- finds another set (a `cp -al` snapshot adds links) walks them again.
-- NULL: none known.
ALTER TABLE guests ADD COLUMN links_outside BLOB;
