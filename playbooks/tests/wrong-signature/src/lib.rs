//! Hostile: exports all four functions, but `apply` takes no context and
//! `rollback` no journal. The runner must refuse it at load time.

wit_bindgen::generate!({
    inline: "
        package salve:playbook@0.1.0;

        interface types {
            variant error { denied(string), not-found, invalid(string), failed(string) }
            record context { job-id: string, environment: string, target: string, parameters: list<tuple<string, string>> }
            record change { action: string, target: string, detail: string, reversible: bool }
        }

        interface playbook {
            use types.{context, change, error};
            plan: func(ctx: context) -> result<list<change>, error>;
            apply: func() -> result<_, error>;
            verify: func(ctx: context) -> result<_, error>;
            rollback: func(ctx: context) -> result<_, error>;
        }

        world wrong-signature {
            export playbook;
        }
    ",
});

use exports::salve::playbook::playbook::{Change, Context, Error, Guest};

struct WrongSignature;

impl Guest for WrongSignature {
    fn plan(_: Context) -> Result<Vec<Change>, Error> {
        Ok(Vec::new())
    }
    fn apply() -> Result<(), Error> {
        Ok(())
    }
    fn verify(_: Context) -> Result<(), Error> {
        Ok(())
    }
    fn rollback(_: Context) -> Result<(), Error> {
        Ok(())
    }
}

export!(WrongSignature);
