//! Tests of guest.
