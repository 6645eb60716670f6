//! The stub linked in place of a capability the playbook imports but the
//! task was not granted: every function of the interface returns
//! `denied("<capability> is not granted to this task")`, and each attempt is
//! audited like any other refused call. One stub serves every capability,
//! built from the component's own import type.
//!
//! # Errors
//! [`link`] fails when a function of the interface does not return
//! `result<_, error>` with a `denied` case: such an interface cannot be
//! stubbed, and the component is refused.

use super::{CapError, HasCalls};
use serde_json::{Value, json};
use std::sync::Arc;
use wasmtime::Engine;
use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, Linker, Type, Val};

/// Longest string argument quoted in the audit record.
const AUDITED_STRING_BYTES: usize = 512;

/// Links `import` (an interface the component imports) as a denying stub.
pub fn link<T: HasCalls + Send + 'static>(
    linker: &mut Linker<T>,
    engine: &Engine,
    component: &Component,
    import: &str,
    capability: &'static str,
) -> Result<(), String> {
    let Some(ComponentItem::ComponentInstance(instance)) =
        component.component_type().get_import(engine, import).map(|e| e.ty)
    else {
        return Err(format!("{import} is not an imported interface"));
    };
    let mut stub = linker.instance(import).map_err(|e| e.to_string())?;
    for (function, item) in instance.exports(engine) {
        let ComponentItem::ComponentFunc(func) = item.ty else {
            continue; // types need no definition
        };
        if !returns_denied_error(&func) {
            return Err(format!("{import}#{function} does not return result<_, error>, so it cannot be denied"));
        }
        let params: Arc<[String]> = func.params().map(|(name, _)| name.to_string()).collect();
        let function: Arc<str> = function.into();
        let name = function.clone();
        stub.func_new_async(&name, move |store, _ty, args, results| {
            let params = Arc::clone(&params);
            let function = Arc::clone(&function);
            Box::new(async move {
                let reason = format!("{capability} is not granted to this task");
                let args: serde_json::Map<String, Value> =
                    params.iter().cloned().zip(args.iter().map(summarize)).collect();
                let refusal = CapError::Denied(reason.clone());
                let _guest_view: Result<(), _> =
                    store.data().calls().refuse(capability, &function, &Value::Object(args), refusal)?;
                let denied = Val::Variant("denied".into(), Some(Box::new(Val::String(reason))));
                results[0] = Val::Result(Err(Some(Box::new(denied))));
                Ok(())
            })
        })
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn returns_denied_error(func: &ComponentFunc) -> bool {
    let mut results = func.results();
    let (Some(Type::Result(result)), None) = (results.next(), results.next()) else {
        return false;
    };
    let Some(Type::Variant(error)) = result.err() else {
        return false;
    };
    error.cases().any(|case| case.name == "denied" && matches!(case.ty, Some(Type::String)))
}

/// What the audit record says of one argument: scalars and (cut) strings as
/// they are, anything larger by its size.
fn summarize(value: &Val) -> Value {
    match value {
        Val::String(s) => super::audited(s, AUDITED_STRING_BYTES),
        Val::Bool(b) => json!(b),
        Val::U8(n) => json!(n),
        Val::U16(n) => json!(n),
        Val::U32(n) => json!(n),
        Val::U64(n) => json!(n),
        Val::S8(n) => json!(n),
        Val::S16(n) => json!(n),
        Val::S32(n) => json!(n),
        Val::S64(n) => json!(n),
        Val::Enum(name) => json!(name),
        Val::List(items) => json!({ "items": items.len() }),
        _ => json!("(not recorded)"),
    }
}
