//! End-to-end tests of the dialtone binaries; the tests are under `tests/`.
