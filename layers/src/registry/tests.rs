//! End-to-end tests of the client against a real docker-registry process.
