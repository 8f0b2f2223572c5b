//! Tests of fs.
