//! llhttp 9.3 compiled into the binary that links this crate (see build.rs),
//! for rwsgi-core's tests and fuzz target, which do not run inside Node.
//! Link it with `use rwsgi_test_llhttp as _;` and build the binary with
//! `-rdynamic`.
