//! Tests of unify.
