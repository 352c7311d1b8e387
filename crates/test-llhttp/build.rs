// Compiles llhttp's C (fetched from the PyPI `llhttp` sdist by fetch.sh
// into target/, never into git) as a whole archive, so every llhttp_*
// symbol is in a binary that links this crate. The binary must also be
// linked with -rdynamic, for rwsgi-core's dlsym(RTLD_DEFAULT) lookup to
// find them as it finds Node's in production.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let src = std::env::var("LLHTTP_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|_| manifest.join("../../target/llhttp-src"));
    let lib = src.join("lib");
    if !lib.join("llhttp.c").exists() {
        let fetched = Command::new("bash")
            .arg(manifest.join("fetch.sh"))
            .arg(&src)
            .status();
        if !matches!(fetched, Ok(s) if s.success()) || !lib.join("llhttp.c").exists() {
            panic!(
                "llhttp sources not found in {} and fetching them failed: run crates/test-llhttp/fetch.sh (needs python3 -m pip and PyPI)",
                lib.display()
            );
        }
    }
    cc::Build::new()
        .files(["llhttp.c", "api.c", "http.c"].map(|f| lib.join(f)))
        .include(&lib)
        .warnings(false)
        .link_lib_modifier("+whole-archive")
        .compile("llhttp");
    println!("cargo:rerun-if-env-changed=LLHTTP_SRC");
    println!("cargo:rerun-if-changed=fetch.sh");
}
