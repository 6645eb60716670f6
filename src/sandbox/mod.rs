//! The wasmtime sandbox: one engine per process, components checked once at
//! load, and a linker per (component, granted capabilities) that links only
//! what the grant allows.
//!
//! What a playbook gets:
//! - the `salve:playbook` interfaces it imports: `log` and `journal`
//!   always; every other capability only if the task's grant has it, and
//!   otherwise a stub that answers `denied` (see [`crate::host::denied`]);
//! - the minimal WASI a language runtime needs: `wasi:cli` with no
//!   arguments, no environment and an empty stdin, stdout/stderr captured
//!   and bounded; `wasi:io`, `wasi:clocks`, `wasi:random`. Never
//!   `wasi:filesystem` or `wasi:sockets`: a component that imports them is
//!   refused at load.
//!
//! Limits: an epoch deadline per phase (the playbook yields to the executor
//! at every tick and traps with [`PhaseTimeout`] at the deadline), a
//! linear-memory cap per store ([`MemoryCap`]), a wasm stack cap, and the
//! pooling allocator sized for [`SandboxConfig::max_instances`].
//!
//! # Errors
//! [`LoadError`] says why a component was refused, naming the missing
//! export or the forbidden import.

pub mod catalog;
pub mod limits;
pub mod output;

pub use crate::bindings::LoadError;
pub use catalog::Catalog;
pub use limits::{MemoryCap, MemoryLimitExceeded, PhaseStopped, PhaseTimeout, TableLimitExceeded};

use crate::artifact::{Manifest, VerifiedArtifact};
use crate::audit::Phase;
use crate::bindings::{PACKAGE, Remediation, RemediationPre, VERSION};
use crate::grant::{Capabilities, Grant};
use crate::host::exec::{Exec, ExecView};
use crate::host::fs::{Fs, FsView};
use crate::host::http::{Http, HttpView};
use crate::host::journal::{Journal, JournalHost, JournalView};
use crate::host::log::{LogBudget, LogHost, LogView};
use crate::host::{Calls, HasCalls, denied};
use output::Capture;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Most WASI resources (streams, pollables) one playbook may hold at once.
pub const MAX_RESOURCES: usize = 1000;
/// The four exports every playbook must have.
pub const REQUIRED_EXPORTS: [&str; 4] = ["plan", "apply", "verify", "rollback"];

/// WASI interfaces linked for the language runtime, by package.
const WASI_ALLOWED: &[(&str, &[&str])] = &[
    (
        "wasi:cli",
        &[
            "environment",
            "exit",
            "stdin",
            "stdout",
            "stderr",
            "terminal-input",
            "terminal-output",
            "terminal-stdin",
            "terminal-stdout",
            "terminal-stderr",
        ],
    ),
    ("wasi:io", &["error", "poll", "streams"]),
    ("wasi:clocks", &["monotonic-clock", "wall-clock"]),
    ("wasi:random", &["random", "insecure", "insecure-seed"]),
];

/// How the process-wide engine is set up.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The most linear memory any grant may give a playbook.
    pub memory_ceiling: u64,
    /// Most bytes of wasm stack.
    pub max_wasm_stack: usize,
    /// How often the epoch advances: the granularity of phase deadlines and
    /// of yielding to other jobs.
    pub epoch_tick: Duration,
    /// Use the pooling instance allocator (preallocated slots) rather than
    /// allocating each instance on demand.
    pub pooling: bool,
    /// Most playbook instances alive at once (pooling slots).
    pub max_instances: u32,
    /// Bytes of stdout and of stderr kept per phase.
    pub output_limit: usize,
    /// Bytes of each pooled linear memory (and table) reset with `memset`
    /// and kept resident when an instance ends, instead of handed back with
    /// `madvise` and faulted in again by the next one. Trades that much RSS
    /// per warm slot for fewer page faults per job.
    pub keep_resident: usize,
    /// Longest one host call may take.
    pub host_call_timeout: Duration,
    /// Run read-only host calls (`fs` stat, list, read) on the calling
    /// thread rather than on the blocking pool. A local `stat` then costs a
    /// syscall instead of a thread hand-off (about 2 µs instead of 15), but
    /// a read that hangs (a dead network mount) holds a runtime thread and
    /// cannot be timed out. Mutating calls always run on the blocking pool,
    /// where they are timed out and waited for before rollback.
    pub inline_reads: bool,
    /// Where compiled code is cached on disk (wasmtime's compilation cache,
    /// keyed by the component's digest and the engine's configuration), so
    /// a component is compiled once, not once per process. `None`: no disk
    /// cache.
    ///
    /// Why not `Engine::precompile_component`: loading its output back is
    /// `unsafe` (`Component::deserialize` trusts the bytes as native code),
    /// and salve forbids `unsafe`. wasmtime's cache does the same work
    /// behind a safe API. The directory is as sensitive as the runner's
    /// binary: it is created `0700`.
    pub cache_dir: Option<std::path::PathBuf>,
    /// The `salve` binary, which `exec` commands run under as their reaper
    /// (see [`crate::reaper`]): nothing a command starts outlives it, even
    /// a daemon in a session of its own. `None`: a command's process group
    /// is killed when it ends, which misses such a daemon.
    pub reaper: Option<std::sync::Arc<std::path::Path>>,
}

impl Default for SandboxConfig {
    fn default() -> SandboxConfig {
        SandboxConfig {
            memory_ceiling: 1 << 30,
            max_wasm_stack: 512 << 10,
            epoch_tick: Duration::from_millis(10),
            pooling: true,
            max_instances: 1000,
            output_limit: 16 << 10,
            keep_resident: 128 << 10,
            host_call_timeout: crate::host::DEFAULT_HOST_CALL_TIMEOUT,
            inline_reads: true,
            cache_dir: None,
            reaper: None,
        }
    }
}

/// The process-wide sandbox: the engine and its epoch ticker.
#[derive(Clone)]
pub struct Sandbox {
    engine: Engine,
    config: Arc<SandboxConfig>,
    cache: Option<wasmtime::Cache>,
}

impl Sandbox {
    pub fn new(config: SandboxConfig) -> Result<Sandbox, LoadError> {
        let mut wasm = Config::new();
        wasm.epoch_interruption(true).max_wasm_stack(config.max_wasm_stack);
        if config.pooling {
            let mut pool = PoolingAllocationConfig::default();
            let n = config.max_instances;
            pool.total_component_instances(n)
                .total_core_instances(n.saturating_mul(4))
                .total_memories(n.saturating_mul(2))
                .total_tables(n.saturating_mul(4))
                .total_stacks(n)
                .max_memory_size(config.memory_ceiling as usize)
                .linear_memory_keep_resident(config.keep_resident)
                .table_keep_resident(config.keep_resident);
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let cache =
            if let Some(dir) = &config.cache_dir {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| {
                    LoadError::Engine(format!("cannot create the cache directory {}: {e}", dir.display()))
                })?;
                let mut cache = wasmtime::CacheConfig::new();
                cache.with_directory(dir);
                let cache = wasmtime::Cache::new(cache).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
                wasm.cache(Some(cache.clone()));
                Some(cache)
            } else {
                None
            };
        let engine = Engine::new(&wasm).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let weak = engine.weak();
        let tick = config.epoch_tick;
        std::thread::Builder::new()
            .name("salve-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(tick);
                }
            })
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        Ok(Sandbox { engine, config: Arc::new(config), cache })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Hits and misses of the on-disk compilation cache in this process
    /// (`None` without a cache directory).
    pub fn cache_stats(&self) -> Option<(usize, usize)> {
        self.cache.as_ref().map(|c| (c.cache_hits(), c.cache_misses()))
    }

    /// Compiles a component with NO signature or manifest check and checks
    /// it is a playbook this runner can run: it skips verifying who signed
    /// it and whether its imports are what a manifest declares, and the
    /// playbook it returns has no manifest. Only for what is not (yet) a
    /// signed artifact: `salve run --dangerous-unsigned`, `salve sign`
    /// checking a bare component before signing it, `salve inspect`, and
    /// tests of the sandbox itself. Everything else goes through
    /// [`Sandbox::load`].
    pub fn load_unverified(&self, name: &str, bytes: &[u8]) -> Result<Playbook, LoadError> {
        let component = Component::new(&self.engine, bytes).map_err(|e| LoadError::NotAComponent(format!("{e:#}")))?;
        Playbook::check(self, name, crate::host::digest(bytes), component, None)
    }

    /// Compiles a verified artifact's component, checks it is a playbook,
    /// and that its real imports are exactly what its manifest declares.
    pub fn load(&self, artifact: &VerifiedArtifact) -> Result<Playbook, LoadError> {
        let manifest = artifact.manifest();
        let name = format!("{}@{}", manifest.name, manifest.version);
        let component = Component::new(&self.engine, artifact.component())
            .map_err(|e| LoadError::NotAComponent(format!("{e:#}")))?;
        let mut playbook =
            Playbook::check(self, &name, artifact.digest().to_string(), component, Some(manifest.clone()))?;
        playbook.signers = artifact.signers().to_vec();
        Ok(playbook)
    }

    /// Compiles a component (running nothing) and lists its imports and
    /// exports, whether or not it would pass the load-time checks.
    pub fn interfaces(&self, bytes: &[u8]) -> Result<Interfaces, LoadError> {
        let component = Component::new(&self.engine, bytes).map_err(|e| LoadError::NotAComponent(format!("{e:#}")))?;
        let ty = component.component_type();
        let imports = ty.imports(&self.engine).map(|(name, _)| name.to_string()).collect();
        let mut exports = Vec::new();
        for (name, export) in ty.exports(&self.engine) {
            match export.ty {
                ComponentItem::ComponentInstance(instance) => exports.extend(
                    instance
                        .exports(&self.engine)
                        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
                        .map(|(f, _)| format!("{name}#{f}")),
                ),
                _ => exports.push(name.to_string()),
            }
        }
        Ok(Interfaces { imports, exports })
    }

    /// Builds a store and instance for one phase.
    pub async fn instantiate(&self, playbook: &Playbook, setup: PhaseSetup<'_>) -> wasmtime::Result<Instance> {
        let pre = playbook.pre(self, setup.grant.capabilities()).map_err(wasmtime::Error::msg)?;
        let stdout = Capture::new(self.config.output_limit);
        let stderr = Capture::new(self.config.output_limit);
        let wasi = WasiCtx::builder().stdout(stdout.clone()).stderr(stderr.clone()).build();
        let state = HostState {
            wasi,
            table: {
                // WASI streams and pollables live in host memory, outside the
                // memory cap; a playbook needs a handful.
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_RESOURCES);
                table
            },
            limiter: MemoryCap::new(setup.grant.limits().memory),
            calls: setup.calls,
            grant: setup.grant.clone(),
            journal: setup.journal,
            log: LogBudget::default(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        let limit = setup.deadline;
        let deadline = Instant::now() + limit;
        let stop = setup.stop;
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                return Err(PhaseTimeout { limit }.into());
            }
            if stop.as_ref().is_some_and(|stop| stop.load(std::sync::atomic::Ordering::Acquire)) {
                return Err(PhaseStopped.into());
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        let exports = pre.instantiate_async(&mut store).await?;
        Ok(Instance { store, exports, stdout, stderr })
    }
}

/// What one phase's instance is given.
pub struct PhaseSetup<'a> {
    pub grant: &'a Grant,
    pub calls: Calls,
    pub journal: Option<Journal>,
    pub deadline: Duration,
    /// Once set, the phase traps with [`PhaseStopped`] at the next epoch
    /// tick.
    pub stop: Option<Arc<std::sync::atomic::AtomicBool>>,
}

/// One phase's store and instance.
pub struct Instance {
    pub store: Store<HostState>,
    pub exports: Remediation,
    pub stdout: Capture,
    pub stderr: Capture,
}

/// The data of one store: WASI for the runtime, and salve's capabilities.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryCap,
    pub(crate) calls: Calls,
    grant: Grant,
    pub(crate) journal: Option<Journal>,
    pub(crate) log: LogBudget,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl HasCalls for HostState {
    fn calls(&self) -> &Calls {
        &self.calls
    }
}

impl HostState {
    fn fs(&mut self) -> FsView<'_> {
        FsView { mounts: self.grant.mounts(), calls: &self.calls }
    }

    fn exec(&mut self) -> ExecView<'_> {
        ExecView { rules: self.grant.exec(), mounts: self.grant.mounts(), calls: &self.calls }
    }

    fn http(&mut self) -> HttpView<'_> {
        HttpView { rules: self.grant.http(), calls: &self.calls }
    }

    fn journal(&mut self) -> JournalView<'_> {
        JournalView { journal: self.journal.as_mut(), calls: &self.calls }
    }

    fn log(&mut self) -> LogView<'_> {
        LogView { budget: &mut self.log, calls: &self.calls }
    }
}

/// A component's imports and exports, by name (`interface#function` for
/// the functions of exported interfaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interfaces {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// Which salve capabilities a component imports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imports {
    pub fs: bool,
    pub exec: bool,
    pub http: bool,
}

impl Imports {
    /// Each capability interface, whether the component imports it.
    fn each(&self) -> [(&'static str, bool); 3] {
        [("fs", self.fs), ("exec", self.exec), ("http", self.http)]
    }
}

impl Imports {
    /// Checks that the component imports no capability its manifest does
    /// not declare: an undeclared import makes it unloadable. (A declaration
    /// without an import is allowed: a directory may be declared for the
    /// commands the playbook runs, not for `fs` itself.)
    pub fn check_declared(&self, manifest: &Manifest) -> Result<(), LoadError> {
        let declared = manifest.declared_interfaces();
        match self.each().into_iter().find(|(interface, imported)| *imported && !declared.contains(interface)) {
            Some((interface, _)) => Err(LoadError::UndeclaredImport { interface: interface.into() }),
            None => Ok(()),
        }
    }
}

/// A compiled component that passed the load-time checks.
pub struct Playbook {
    name: String,
    digest: String,
    manifest: Option<Manifest>,
    /// Key ids of the artifact's signers, in order; empty when unsigned.
    signers: Vec<String>,
    component: Component,
    imports: Imports,
    /// One pre-instantiation per set of granted capabilities, built on
    /// first use and kept for the life of the process.
    pres: Mutex<HashMap<Capabilities, RemediationPre<HostState>>>,
}

impl std::fmt::Debug for Playbook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Playbook").field("name", &self.name).field("digest", &self.digest).finish()
    }
}

fn interface_name(import: &str) -> Option<(&str, &str, &str)> {
    let (path, version) = import.split_once('@')?;
    let (package, interface) = path.split_once('/')?;
    Some((package, interface, version))
}

impl Playbook {
    fn check(
        sandbox: &Sandbox,
        name: &str,
        digest: String,
        component: Component,
        manifest: Option<Manifest>,
    ) -> Result<Playbook, LoadError> {
        let engine = &sandbox.engine;
        let ty = component.component_type();

        let export = format!("{PACKAGE}/playbook@{VERSION}");
        let Some(ComponentItem::ComponentInstance(instance)) = ty.get_export(engine, &export).map(|e| e.ty) else {
            return Err(LoadError::NotAPlaybook { exports: ty.exports(engine).map(|(n, _)| n.to_string()).collect() });
        };
        let functions: Vec<&str> = instance.exports(engine).map(|(n, _)| n).collect();
        let missing: Vec<String> =
            REQUIRED_EXPORTS.iter().filter(|f| !functions.contains(f)).map(|f| f.to_string()).collect();
        if !missing.is_empty() {
            return Err(LoadError::MissingExports { missing });
        }

        let mut imports = Imports::default();
        for (import, _) in ty.imports(engine) {
            let forbidden = |why: &str| LoadError::ForbiddenImport { import: import.to_string(), why: why.into() };
            let Some((package, interface, version)) = interface_name(import) else {
                return Err(forbidden("it is not a versioned interface"));
            };
            if package == PACKAGE {
                if version != VERSION {
                    return Err(forbidden(&format!(
                        "this runner provides {PACKAGE}@{VERSION}; rebuild the playbook against it"
                    )));
                }
                match interface {
                    "types" | "log" | "journal" => {}
                    "fs" => imports.fs = true,
                    "exec" => imports.exec = true,
                    "http" => imports.http = true,
                    _ => return Err(forbidden("no such salve capability")),
                }
            } else if package == "wasi:filesystem" {
                return Err(forbidden("a playbook reaches files only through salve:playbook/fs, under its grant"));
            } else if package == "wasi:sockets" || package == "wasi:http" {
                return Err(forbidden("a playbook has no network access of its own"));
            } else {
                let allowed = WASI_ALLOWED
                    .iter()
                    .any(|(p, ifaces)| *p == package && ifaces.contains(&interface) && version.starts_with("0.2."));
                if !allowed {
                    return Err(forbidden("it is not part of the minimal WASI a language runtime needs"));
                }
            }
        }

        if let Some(manifest) = &manifest {
            imports.check_declared(manifest)?;
        }
        let playbook = Playbook {
            name: name.to_string(),
            digest,
            manifest,
            signers: Vec::new(),
            component,
            imports,
            pres: Mutex::default(),
        };
        // Type-check imports and exports now, with every imported capability
        // linked for real, so a mismatch is refused before anything runs.
        let pre = playbook.pre(sandbox, Capabilities { fs: imports.fs, exec: imports.exec, http: imports.http })?;
        check_export_types(engine, &pre, &instance)?;
        Ok(playbook)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// SHA-256, hex, of the signed artifact (of the bare component when
    /// unsigned).
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The signed manifest; `None` for an unsigned component.
    pub fn manifest(&self) -> Option<&Manifest> {
        self.manifest.as_ref()
    }

    /// Key ids of the artifact's signers; empty when unsigned.
    pub fn signers(&self) -> &[String] {
        &self.signers
    }

    pub fn imports(&self) -> Imports {
        self.imports
    }

    fn pre(&self, sandbox: &Sandbox, caps: Capabilities) -> Result<RemediationPre<HostState>, LoadError> {
        let mut pres = self.pres.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pre) = pres.get(&caps) {
            return Ok(pre.clone());
        }
        let linker = self.linker(sandbox, caps)?;
        let instance_pre = linker.instantiate_pre(&self.component).map_err(|e| {
            let detail = format!("{e:#}");
            let import = detail.split('`').nth(1).unwrap_or("an import").to_string();
            LoadError::ImportTypes { import, detail }
        })?;
        let pre = RemediationPre::new(instance_pre).map_err(|e| LoadError::ExportTypes(format!("{e:#}")))?;
        pres.insert(caps, pre.clone());
        Ok(pre)
    }

    /// The linker for this component under a grant with `caps`: WASI for the
    /// runtime, `log` and `journal`, and each imported capability either for
    /// real (granted) or as the denying stub (not granted).
    fn linker(&self, sandbox: &Sandbox, caps: Capabilities) -> Result<Linker<HostState>, LoadError> {
        use crate::bindings::salve::playbook::{exec, fs, http, journal, log};
        use wasmtime_wasi::p2::bindings::{cli, clocks, io, random};
        let engine_err = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
        let mut linker = Linker::new(&sandbox.engine);
        let l = &mut linker;
        (|| -> wasmtime::Result<()> {
            use wasmtime_wasi::cli::{WasiCli, WasiCliView};
            use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
            use wasmtime_wasi::random::{WasiRandom, WasiRandomView};
            io::error::add_to_linker::<HostState, Table>(l, |s| &mut s.table)?;
            io::poll::add_to_linker::<HostState, Table>(l, |s| &mut s.table)?;
            io::streams::add_to_linker::<HostState, Table>(l, |s| &mut s.table)?;
            cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
            cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
            cli::stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
            cli::stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
            cli::stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
            cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
            cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
            cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
            cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
            cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
            clocks::monotonic_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
            clocks::wall_clock::add_to_linker::<HostState, WasiClocks>(l, HostState::clocks)?;
            random::random::add_to_linker::<HostState, WasiRandom>(l, HostState::random)?;
            random::insecure::add_to_linker::<HostState, WasiRandom>(l, HostState::random)?;
            random::insecure_seed::add_to_linker::<HostState, WasiRandom>(l, HostState::random)?;
            log::add_to_linker::<HostState, LogHost>(l, HostState::log)?;
            journal::add_to_linker::<HostState, JournalHost>(l, HostState::journal)?;
            if self.imports.fs && caps.fs {
                fs::add_to_linker::<HostState, Fs>(l, HostState::fs)?;
            }
            if self.imports.exec && caps.exec {
                exec::add_to_linker::<HostState, Exec>(l, HostState::exec)?;
            }
            if self.imports.http && caps.http {
                http::add_to_linker::<HostState, Http>(l, HostState::http)?;
            }
            Ok(())
        })()
        .map_err(engine_err)?;
        let granted = [caps.fs, caps.exec, caps.http];
        for ((interface, imported), granted) in self.imports.each().into_iter().zip(granted) {
            if imported && !granted {
                let import = format!("{PACKAGE}/{interface}@{VERSION}");
                denied::link(&mut linker, &sandbox.engine, &self.component, &import, interface)
                    .map_err(|detail| LoadError::ImportTypes { import, detail })?;
            }
        }
        Ok(linker)
    }
}

/// Checks the four exports against the contract's types. wasmtime checks
/// them only at instantiation; a playbook must be refused before anything
/// runs. (`ComponentFunc::typecheck` is what `bindgen!` itself calls.)
fn check_export_types(
    engine: &Engine,
    pre: &RemediationPre<HostState>,
    instance: &wasmtime::component::types::ComponentInstance,
) -> Result<(), LoadError> {
    use crate::bindings::{Change, Context, Error};
    let instance_type = pre.instance_pre().instance_type();
    for (name, export) in instance.exports(engine) {
        let ComponentItem::ComponentFunc(func) = export.ty else {
            continue;
        };
        let checked = match name {
            "plan" => func.typecheck::<(Context,), (Result<Vec<Change>, Error>,)>(&instance_type),
            "apply" | "verify" => func.typecheck::<(Context,), (Result<(), Error>,)>(&instance_type),
            "rollback" => func.typecheck::<(Context, Vec<Vec<u8>>), (Result<(), Error>,)>(&instance_type),
            _ => continue,
        };
        checked.map_err(|e| LoadError::ExportTypes(format!("`{name}`: {e:#}")))?;
    }
    Ok(())
}

/// Host data for `wasi:io`: the resource table.
struct Table;

impl wasmtime::component::HasData for Table {
    type Data<'a> = &'a mut ResourceTable;
}

/// The phase a store runs, for messages.
pub(crate) fn phase_deadline(grant: &Grant, phase: Phase) -> Duration {
    let limits = grant.limits();
    match phase {
        Phase::Plan => limits.plan,
        Phase::Apply => limits.apply,
        Phase::Verify => limits.verify,
        Phase::Rollback => limits.rollback,
    }
}
