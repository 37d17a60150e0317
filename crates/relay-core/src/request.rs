//! Routing of raw request targets.
