//! Full-copy snapshots of any file, sparse-aware and reflinked where possible.
//!
//! Empty for now: the volume issue fills it.
