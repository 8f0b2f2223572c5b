//! Tests of the guest launcher: real namespaces, a busybox root built per
//! test, every wait bounded.

pub(crate) mod escape;
pub(crate) mod harness;
mod limits;
pub(crate) mod named;
mod net;
mod review_s10_docs;
pub(crate) mod review_s11_life;
mod review_s12_escape;
mod review_s12_guest;
mod review_s20_guest;
pub(crate) mod review_s21_keeper;
mod review_s22_hangup;
mod review_s22_probe;
pub(crate) mod review_s22_sigpipe;
pub(crate) mod review_s22_stall;
mod run;
mod run_options;
pub(crate) mod run_overlay;
mod seccomp;
