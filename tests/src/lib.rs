//! End-to-end tests for cairn live in `tests/`; this library is empty on purpose.
