//! Ingest and link store objects.
