//! The shim's engine: WasmEdge 0.14 through its C API (`wasmedge-sys`'s raw bindings, the
//! same library and API the plugin is built against).
//!
//! One run: load the plugins (each directory of the container's `WASMEDGE_PLUGIN_PATH`,
//! then WasmEdge's default directories), create a VM with WASI (`WasmEdge_VMCreate`
//! registers every loaded plugin's modules), initialise WASI with the container's
//! arguments, environment and `/` preopened, run the entry function, and return the WASI
//! exit code. Runs inside the container process, after the root file system switch, so
//! every path is the container's; the container's environment becomes the process's
//! (plugins read their settings from it).

use containerd_shim_wasm::sandbox::context::{RuntimeContext, Source};
use std::ffi::{CStr, CString};
use std::os::raw::c_char;
use std::path::PathBuf;
use wasmedge_sys::ffi;

/// Why a run could not happen or failed in WasmEdge.
#[derive(Debug)]
pub enum RunError {
    /// An argument, variable or path with a NUL byte.
    Nul(&'static str, std::ffi::NulError),
    /// A WasmEdge object could not be created.
    Create(&'static str),
    /// The entry function failed (not a WASI exit): WasmEdge's message.
    Wasm { step: &'static str, message: String },
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Nul(what, e) => write!(f, "{what}: {e}"),
            RunError::Create(what) => write!(f, "WasmEdge could not create {what}"),
            RunError::Wasm { step, message } => write!(f, "{step}: {message}"),
        }
    }
}

impl std::error::Error for RunError {}

/// The module to run.
enum Module {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// Everything a run needs, taken from the container's OCI spec.
pub struct Run {
    module: Module,
    func: String,
    args: Vec<String>,
    envs: Vec<String>,
}

fn cstring(what: &'static str, s: &str) -> Result<CString, RunError> {
    CString::new(s).map_err(|e| RunError::Nul(what, e))
}

/// WasmEdge's message for a result.
fn message(res: ffi::WasmEdge_Result) -> String {
    // SAFETY: WasmEdge_ResultGetMessage returns a pointer to a static NUL-terminated string
    // for every result value.
    unsafe { CStr::from_ptr(ffi::WasmEdge_ResultGetMessage(res)) }
        .to_string_lossy()
        .into_owned()
}

impl Run {
    /// The module (a file in the container, or the image's wasm layer), entry function,
    /// arguments and environment of the container.
    pub fn from_context(ctx: &impl RuntimeContext) -> anyhow::Result<Run> {
        let entry = ctx.entrypoint();
        let module = match entry.source {
            Source::File(path) => Module::File(path),
            Source::Oci([layer, ..]) => Module::Bytes(layer.layer.clone()),
            Source::Oci([]) => anyhow::bail!("the image has no wasm layer"),
        };
        Ok(Run {
            module,
            func: entry.func,
            args: ctx.args().to_vec(),
            envs: ctx.envs().to_vec(),
        })
    }

    /// The container's `WASMEDGE_PLUGIN_PATH` directories (a `:`-separated list; empty
    /// entries skipped, since WasmEdge 0.14 aborts on them).
    fn plugin_dirs(&self) -> Vec<String> {
        self.envs
            .iter()
            .filter_map(|kv| kv.strip_prefix("WASMEDGE_PLUGIN_PATH="))
            .flat_map(|v| v.split(':'))
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Makes the container's environment this process's environment. Plugins read their
    /// configuration from the process (Skylark: `SKYLARK_REDIS_URL`, ...), as under crun,
    /// where the container process's environment is the spec's; containerd-shim-wasm
    /// leaves the shim's environment in place and hands the spec's to the engine.
    fn adopt_environment(&self) {
        for kv in &self.envs {
            if let Some((key, value)) = kv.split_once('=') {
                if !key.is_empty() {
                    std::env::set_var(key, value);
                }
            }
        }
    }

    /// Loads the plugins, runs the module, returns its WASI exit code. Runs in the
    /// container's own process, before any plugin or WasmEdge thread exists.
    pub fn execute(&self) -> Result<i32, RunError> {
        // WasmEdge's default directories first, with an empty environment: WasmEdge 0.14
        // also reads WASMEDGE_PLUGIN_PATH there and aborts on an empty entry (a trailing
        // `:`), so the container's list is handled below, entry by entry.
        for (key, _) in std::env::vars_os() {
            std::env::remove_var(key);
        }
        // SAFETY: no arguments; loads plugins from WasmEdge's default directories.
        unsafe { ffi::WasmEdge_PluginLoadWithDefaultPaths() };
        for dir in self.plugin_dirs() {
            let c = cstring("WASMEDGE_PLUGIN_PATH", &dir)?;
            // SAFETY: c is a valid NUL-terminated path for the duration of the call;
            // WasmEdge copies what it keeps.
            unsafe { ffi::WasmEdge_PluginLoadFromPath(c.as_ptr()) };
        }
        // Before the VM creates the plugins' modules, which may read their settings.
        self.adopt_environment();

        let args: Vec<CString> = self
            .args
            .iter()
            .map(|a| cstring("argument", a))
            .collect::<Result<_, _>>()?;
        let envs: Vec<CString> = self
            .envs
            .iter()
            .map(|e| cstring("environment variable", e))
            .collect::<Result<_, _>>()?;
        let preopens = [cstring("preopen", "/:/")?];
        let func = cstring("entry function", &self.func)?;
        let arg_ptrs: Vec<*const c_char> = args.iter().map(|a| a.as_ptr()).collect();
        let env_ptrs: Vec<*const c_char> = envs.iter().map(|e| e.as_ptr()).collect();
        let preopen_ptrs: Vec<*const c_char> = preopens.iter().map(|p| p.as_ptr()).collect();

        // SAFETY: creating a configure context has no preconditions; null means failure.
        let conf = unsafe { ffi::WasmEdge_ConfigureCreate() };
        if conf.is_null() {
            return Err(RunError::Create("a configuration"));
        }
        let vm = Vm::new(conf)?;
        // SAFETY: vm.0 is a live VM; the WASI module instance it returns belongs to it.
        let wasi = unsafe {
            ffi::WasmEdge_VMGetImportModuleContext(vm.0, ffi::WasmEdge_HostRegistration_Wasi)
        };
        if wasi.is_null() {
            return Err(RunError::Create("the WASI module"));
        }
        // SAFETY: wasi is the VM's live WASI module; every pointer array holds pointers to
        // NUL-terminated strings that outlive the call, with the lengths given.
        unsafe {
            ffi::WasmEdge_ModuleInstanceInitWASI(
                wasi,
                arg_ptrs.as_ptr(),
                arg_ptrs.len() as u32,
                env_ptrs.as_ptr(),
                env_ptrs.len() as u32,
                preopen_ptrs.as_ptr(),
                preopen_ptrs.len() as u32,
            )
        };
        // SAFETY: func is NUL-terminated and outlives the call; WasmEdge copies it.
        let func_name = unsafe { ffi::WasmEdge_StringCreateByCString(func.as_ptr()) };
        let res = match &self.module {
            Module::File(path) => {
                let p = cstring("module path", &path.to_string_lossy())?;
                // SAFETY: vm.0 is live, p is NUL-terminated; no parameters or returns are
                // passed (null arrays with length 0).
                unsafe {
                    ffi::WasmEdge_VMRunWasmFromFile(
                        vm.0,
                        p.as_ptr(),
                        func_name,
                        std::ptr::null(),
                        0,
                        std::ptr::null_mut(),
                        0,
                    )
                }
            }
            Module::Bytes(bytes) => {
                // SAFETY: vm.0 is live; bytes outlives the call, with its length given.
                unsafe {
                    ffi::WasmEdge_VMRunWasmFromBytes(
                        vm.0,
                        ffi::WasmEdge_BytesWrap(bytes.as_ptr(), bytes.len() as u32),
                        func_name,
                        std::ptr::null(),
                        0,
                        std::ptr::null_mut(),
                        0,
                    )
                }
            }
        };
        // SAFETY: func_name was created above and is not used after this.
        unsafe { ffi::WasmEdge_StringDelete(func_name) };
        // SAFETY: a plain value check.
        if !unsafe { ffi::WasmEdge_ResultOK(res) } {
            return Err(RunError::Wasm {
                step: "run",
                message: message(res),
            });
        }
        // SAFETY: wasi is the VM's live WASI module (a WASI exit is a successful result).
        Ok(unsafe { ffi::WasmEdge_ModuleInstanceWASIGetExitCode(wasi) } as i32)
    }
}

/// A VM that owns its configuration; both are deleted on drop.
struct Vm(
    *mut ffi::WasmEdge_VMContext,
    *mut ffi::WasmEdge_ConfigureContext,
);

impl Vm {
    /// A VM with WASI, from `conf` (taken over: deleted with the VM, or here on failure).
    fn new(conf: *mut ffi::WasmEdge_ConfigureContext) -> Result<Vm, RunError> {
        // SAFETY: conf is a live configuration owned by us.
        unsafe {
            ffi::WasmEdge_ConfigureAddHostRegistration(conf, ffi::WasmEdge_HostRegistration_Wasi)
        };
        // SAFETY: conf is live; a null store makes the VM create its own.
        let vm = unsafe { ffi::WasmEdge_VMCreate(conf, std::ptr::null_mut()) };
        if vm.is_null() {
            // SAFETY: conf is live and not used after this.
            unsafe { ffi::WasmEdge_ConfigureDelete(conf) };
            return Err(RunError::Create("a VM"));
        }
        Ok(Vm(vm, conf))
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // SAFETY: both were created by Vm::new, are live, and are deleted exactly once.
        unsafe {
            ffi::WasmEdge_VMDelete(self.0);
            ffi::WasmEdge_ConfigureDelete(self.1);
        }
    }
}
