//! Unit tests of the cluster state machine (no Redis).
