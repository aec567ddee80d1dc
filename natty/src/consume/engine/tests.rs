//! The engine's rules, offline: hand-built messages settle into a `Recorder`.
