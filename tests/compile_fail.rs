//! Every error `#[intercept]` can give, with the tokens it points at:
//! `tests/ui/*.rs` and their `.stderr`. Regenerate after a message changes with
//! `TRYBUILD=overwrite cargo test --all-features --test compile_fail` and read the diff.

#[test]
fn ui() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
