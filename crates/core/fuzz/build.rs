// Compiles llhttp (fetched by fetch-llhttp.sh) into the fuzz binary and
// exports its symbols, so rwsgi-core's dlsym(RTLD_DEFAULT) lookup finds them
// as it finds Node's in production.
use std::path::PathBuf;

fn main() {
    let src = std::env::var("LLHTTP_SRC").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../target/llhttp-src")
    });
    let lib = src.join("lib");
    if !lib.join("llhttp.c").exists() {
        panic!("llhttp sources not found in {}: run crates/core/fuzz/fetch-llhttp.sh", lib.display());
    }
    cc::Build::new()
        .files(["llhttp.c", "api.c", "http.c"].map(|f| lib.join(f)))
        .include(&lib)
        .warnings(false)
        .link_lib_modifier("+whole-archive")
        .compile("llhttp");
    println!("cargo:rustc-link-arg=-rdynamic");
    println!("cargo:rerun-if-env-changed=LLHTTP_SRC");
}
