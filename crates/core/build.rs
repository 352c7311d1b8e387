// The integration tests (tests/) and examples link llhttp in through rwsgi-test-llhttp;
// exporting its symbols lets llhttp.rs's dlsym(RTLD_DEFAULT) find them, as
// it finds Node's in production. Nothing else is built or linked here.
fn main() {
    println!("cargo:rustc-link-arg-tests=-rdynamic");
    println!("cargo:rustc-link-arg-examples=-rdynamic");
    println!("cargo:rerun-if-changed=build.rs");
}
