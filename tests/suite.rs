//! The integration tests, one test binary: each file of tests/ is a module of it, and the
//! support modules are shared, so the library is linked once for all of them (tests/hooks.rs,
//! the tests that need the test-hooks feature, is the other binary). A file of tests/ that is not
//! declared here would never run: `every_test_file_is_part_of_the_suite` checks that.

mod cli_support;
mod common;
mod dropin_support;
#[path = "common/posix_support.rs"]
mod posix_support;
mod reliability_support;

mod attr_copyup;
mod cli;
mod crash;
mod diff_export;
mod differential;
mod dropin;
mod dropin_rootless;
mod durability;
mod fsx;
mod hostile;
mod install;
mod kernel_open;
mod lifecycle;
#[path = "core.rs"]
mod overlay_core;
mod passthrough_lower;
mod posix;
mod posix_copyup;
mod posix_trust;
mod powercut;
mod random_differential;
mod redirect_dir;
mod scenario;
mod semantics_copyup;
mod semantics_lookup;
mod semantics_namespace;
mod sqlite;
mod stats;
mod storm;
mod stress;
mod transport;

#[test]
fn every_test_file_is_part_of_the_suite() {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let suite = std::fs::read_to_string(here.join("suite.rs")).expect("tests/suite.rs");
    let hooks = std::fs::read_to_string(here.join("hooks.rs")).expect("tests/hooks.rs");
    for entry in std::fs::read_dir(&here).expect("tests/") {
        let name = entry.expect("tests/ entry").file_name();
        let name = name.to_string_lossy();
        let Some(module) = name.strip_suffix(".rs") else {
            continue;
        };
        if module == "suite" || module == "hooks" {
            continue;
        }
        let declared = suite.contains(&format!("mod {module};"))
            || suite.contains(&format!("#[path = \"{name}\"]"))
            || hooks.contains(&format!("mod {module};"));
        assert!(
            declared,
            "tests/{name} is not a module of tests/suite.rs, so it never runs"
        );
    }
}
