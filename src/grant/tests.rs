use super::*;
use std::time::Duration;

#[test]
fn unknown_fields_and_duplicate_keys_are_refused() {
    let unknown = GrantSpec::parse("[[fs]]\nname = \"a\"\npath = \"/tmp\"\naccess = \"rw\"\nmode = 1\n");
    assert!(matches!(unknown, Err(GrantError::Parse(m)) if m.contains("unknown field `mode`")));
    let duplicate = GrantSpec::parse("[limits]\nmemory = \"1MiB\"\nmemory = \"2MiB\"\n");
    assert!(matches!(duplicate, Err(GrantError::Parse(m)) if m.contains("duplicate key")));
    let access = GrantSpec::parse("[[fs]]\nname = \"a\"\npath = \"/tmp\"\naccess = \"all\"\n");
    assert!(matches!(access, Err(GrantError::Parse(m)) if m.contains("unknown variant `all`")));
}

#[test]
fn limits_default_per_phase_and_refuse_out_of_bounds() {
    let spec = GrantSpec::parse("[limits]\ntimeout = \"5s\"\napply_timeout = \"1m\"\nmemory = \"32MiB\"\n").unwrap();
    let limits = spec.limits().unwrap();
    assert_eq!(limits.apply, Duration::from_secs(60));
    assert_eq!(limits.verify, Duration::from_secs(5));
    assert_eq!(limits.memory, 32 << 20);
    for bad in ["timeout = \"0s\"", "timeout = \"2h\"", "timeout = \"soon\"", "memory = \"1KiB\""] {
        let spec = GrantSpec::parse(&format!("[limits]\n{bad}\n")).unwrap();
        assert!(matches!(spec.limits(), Err(GrantError::Limit { .. })), "{bad}");
    }
}

#[test]
fn mounts_must_be_named_absolute_existing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let entry = |name: &str, path: &Path| FsEntry { name: name.into(), path: path.into(), access: Access::Ro };
    let open = |entries: Vec<FsEntry>| Grant::open_unbounded(&GrantSpec { fs: entries, ..Default::default() });

    assert!(matches!(open(vec![entry("a/b", dir.path())]), Err(GrantError::FsName { .. })));
    assert!(matches!(open(vec![entry("", dir.path())]), Err(GrantError::FsName { .. })));
    assert!(matches!(open(vec![entry("a", Path::new("relative"))]), Err(GrantError::FsPath { .. })));
    assert!(matches!(open(vec![entry("a", &file)]), Err(GrantError::FsPath { .. })));
    assert!(matches!(open(vec![entry("a", &dir.path().join("missing"))]), Err(GrantError::FsPath { .. })));
    assert!(matches!(
        open(vec![entry("a", dir.path()), entry("a", dir.path())]),
        Err(GrantError::DuplicateName { first: 1, second: 2, .. })
    ));
    let grant = open(vec![FsEntry { access: Access::Rw, ..entry("a", dir.path()) }]).unwrap();
    assert_eq!(grant.read_only().mounts()[0].access, Access::Ro);
}

#[test]
fn a_working_directory_resolves_beneath_its_mount() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::create_dir_all(root.join("a/sub")).unwrap();
    std::fs::write(root.join("a/file"), b"x").unwrap();
    std::os::unix::fs::symlink("sub", root.join("a/in")).unwrap();
    std::os::unix::fs::symlink("..", root.join("a/up")).unwrap();
    std::os::unix::fs::symlink(root.join("a/sub"), root.join("a/absolute")).unwrap();
    let spec = GrantSpec {
        fs: vec![FsEntry { name: "a".into(), path: root.join("a"), access: Access::Ro }],
        ..Default::default()
    };
    let grant = Grant::open_unbounded(&spec).unwrap();
    let cwd = |path: &str| resolve_in_mounts(grant.mounts(), path);
    assert_eq!(cwd("a").unwrap(), root.join("a"));
    assert_eq!(cwd("a/sub").unwrap(), root.join("a/sub"));
    assert_eq!(cwd("a/in").unwrap(), root.join("a/sub"), "a symlink that stays inside");
    for (path, expected) in [
        ("a/up", "leaves the granted directory"),
        ("a/absolute", "leaves the granted directory"),
        ("a/file", "is not a directory"),
        ("a/missing", "is not a directory"),
        ("a/../a", "`..`"),
        ("b", "not a granted directory"),
    ] {
        let error = cwd(path).unwrap_err();
        assert!(error.contains(expected), "{path}: {error}");
    }
}

#[test]
fn an_escape_is_told_from_the_operating_system_refusing() {
    let denied = std::io::Error::from_raw_os_error(rustix::io::Errno::ACCESS.raw_os_error());
    assert!(!escapes(&denied));
    assert!(matches!(BeneathError::from_io(denied), BeneathError::Io(_)));
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/etc", dir.path().join("etc")).unwrap();
    let handle = cap_std::fs::Dir::open_ambient_dir(dir.path(), ambient_authority()).unwrap();
    let escape = handle.open("etc/passwd").unwrap_err();
    assert!(matches!(BeneathError::from_io(escape), BeneathError::Escapes));
    let missing = handle.open("missing").unwrap_err();
    assert!(matches!(BeneathError::from_io(missing), BeneathError::NotFound));
}

fn manifest_with_http(declaration: &str) -> Manifest {
    Manifest::parse(&format!(
        "name = \"p\"\nversion = \"1.0.0\"\nowner = \"o\"\npurpose = \"p\"\nrisk_class = \"read-only\"\n\
         reversibility = \"reversible\"\n[[capabilities.http]]\nmethods = [\"GET\"]\n{declaration}\n"
    ))
    .unwrap()
}

#[test]
fn path_parameters_in_a_grant_need_the_manifest_to_declare_them() {
    let spec = GrantSpec::parse(
        "[[http]]\nmethods = [\"GET\"]\nprefix = \"https://api.example.com/v1/\"\nallow_path_parameters = true\n",
    )
    .unwrap();
    let undeclared = manifest_with_http("urls = [\"https://api.example.com/**\"]");
    let refused = Grant::open(&spec, &undeclared).unwrap_err();
    assert!(
        matches!(&refused, GrantError::Beyond { kind: "http", asked, .. } if asked.ends_with("with path parameters")),
        "{refused}"
    );
    let declared = manifest_with_http("urls = [\"https://api.example.com/**\"]\nallow_path_parameters = true");
    let grant = Grant::open(&spec, &declared).unwrap();
    assert!(grant.http()[0].allow_path_parameters);
    assert_eq!(grant.summary()["http"][0]["allow_path_parameters"], true, "audited");
    let plain = GrantSpec::parse("[[http]]\nmethods = [\"GET\"]\nprefix = \"https://api.example.com/v1/\"\n");
    let plain = Grant::open(&plain.unwrap(), &declared).unwrap();
    assert!(!plain.http()[0].allow_path_parameters, "a declaration allows, it does not switch on");
    assert!(plain.summary()["http"][0].get("allow_path_parameters").is_none());
}
