//! The trust store (TOML): parsing, and every lookup a check makes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use salve::keys::Role;
use salve::trust::TrustStore;

fuzz_target!(|data: &[u8]| {
    let Some(text) = salve_fuzz::text(data) else { return };
    let Ok(trust) = TrustStore::parse(text) else { return };
    let now = salve_fuzz::now();
    let ids: Vec<String> = trust.keys().map(|k| k.entry.id.clone()).collect();
    for id in &ids {
        for role in [Role::Author, Role::Agent, Role::Approver, Role::Runner] {
            let _ = trust.check(id, role, "prod", now);
            let _ = trust.check_role(id, role, now);
        }
    }
    for environment in ["dev", "prod", "*"] {
        let _ = trust.check_signers(&ids, environment);
        let _ = trust.check_signers(&ids[..ids.len().min(1)], environment);
    }
});
