//! Lists the playbooks under `playbooks/` for the test suite: every playbook
//! crate must have a test named after it, or the tests do not compile (see
//! `foreach_playbook!` in tests/salve/main.rs).

use std::fmt::Write;
use std::path::Path;

fn crates_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().replace('-', "_"))
        .filter(|name| name != "sdk")
        .collect();
    names.sort();
    names
}

fn main() {
    println!("cargo:rerun-if-changed=playbooks/Cargo.toml");
    println!("cargo:rerun-if-changed=playbooks/tests");
    let mut names = crates_in(Path::new("playbooks"));
    names.extend(crates_in(Path::new("playbooks/tests")));
    let mut out = String::from(
        "/// Calls `$mac!(name)` for every playbook crate under playbooks/.\n\
         #[allow(unused_macros)]\n\
         macro_rules! foreach_playbook {\n    ($mac:ident) => {\n",
    );
    for name in names {
        writeln!(out, "        $mac!({name});").unwrap();
    }
    out.push_str("    };\n}\n");
    let path = Path::new(&std::env::var("OUT_DIR").unwrap()).join("playbooks.rs");
    std::fs::write(path, out).unwrap();
}
