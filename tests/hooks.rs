//! The tests that need the test-hooks feature (fault injection compiled into cowfs), one test
//! binary beside tests/suite.rs: a panic in one request, and errors at each step of a copy-up.

mod common;

mod copyup_faults;
mod panic;
mod redirect_dir_faults;
