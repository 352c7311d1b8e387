// Exports the llhttp symbols rwsgi-test-llhttp compiles in, so rwsgi-core's
// dlsym(RTLD_DEFAULT) lookup finds them as it finds Node's in production.
fn main() {
    println!("cargo:rustc-link-arg=-rdynamic");
}
