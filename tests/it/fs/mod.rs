//! Tests of the FUSE overlay (`unifs mount`): real mounts over fixture guests
//! whose shared files are built here as unify would leave them.

pub(crate) mod harness;

mod acl;
mod cli;
mod cow;
pub(crate) mod errors;
mod links;
mod pjdfstest;
mod posix;
pub(crate) mod power;
mod regressions;
mod review_s10_docs;
mod review_s10_fuzz;
mod review_s10_live;
mod review_s10_xattr;
mod review_s11_fault;
mod review_s17_mount;
pub(crate) mod review_s18_fuse;
mod review_s18_mount;
mod review_s19_mount;
mod review_s20_fs;
mod review_s20_mount;
mod review_s21_fs;
mod review_s21_readdir;
mod review_s22_mountid;
mod review_s22_readdir;
mod review_s24_release;
mod review_s7;
mod review_s7_r2;
mod review_s8_live;
mod review_s8_posix;
mod review_s8b_mount;
mod review_s9_fidelity;
mod review_s9r2_fs;
mod review_s9r2_store;
mod safety;
mod stress;
mod unified;
