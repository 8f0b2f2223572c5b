//! One integration-test binary: real files in temp dirs, real FUSE mounts,
//! real namespaces. Run as root (CI does).

mod backup;
mod common;
mod failures;
mod fs;
mod guest;
mod manifest_walk;
mod restore;
mod review_s10_conc;
mod review_s10_docs;
mod review_s11_compat;
mod review_s11_fault;
mod review_s12_store;
mod review_s17_cli;
mod review_s17_store;
mod review_s18_fs;
mod review_s18_store;
mod review_s19_ops;
mod review_s20_backup;
mod review_s20_store;
mod review_s21_backup;
mod review_s21_backup_links;
mod review_s21_deep;
mod review_s21_store;
mod review_s22_backup;
mod review_s22_clones;
mod review_s22_ident;
mod review_s22_sigpipe;
mod review_s23_time;
mod review_s8_cli;
mod review_s8b_unify;
mod review_s9_backup;
mod review_s9_exhaust;
mod store;
mod tree;
mod unify;
