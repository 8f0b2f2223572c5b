//! verify, gc, stats.
