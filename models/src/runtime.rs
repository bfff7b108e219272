//! The ONNX Runtime shared library: finding it, loading it once per process, and the session
//! options every model shares (intra-op threads, spinning, execution provider).
//!
//! Main types: [`Runtime`], [`SessionConfig`], [`ExecutionProviderKind`], [`RuntimeError`].
//! `ort` is built with `load-dynamic`: nothing links against ONNX Runtime at build time, and the
//! library is the one from the `onnxruntime` wheel (`libonnxruntime.so.1.32.0`). ONNX Runtime can
//! be loaded only once per process, so [`Runtime::load`] refuses a second, different library
//! instead of silently keeping the first. This module must not load models.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// File name of the library in the PyPI `onnxruntime` 1.32.0 wheel.
pub const LIBRARY_FILE: &str = "libonnxruntime.so.1.32.0";

/// A loaded ONNX Runtime: the shared library and its environment. Cheap to clone through `Arc`.
#[derive(Debug)]
pub struct Runtime {
    environment: ort::environment::Environment,
    library: PathBuf,
}

/// Options for every inference session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// Threads one inference uses; default 1 (leaves the other cores to video decode).
    #[serde(default = "default_threads")]
    pub intra_threads: NonZeroUsize,
    /// Let idle intra-op threads spin; default false: spinning collapses throughput on a small
    /// box where anything else runs.
    #[serde(default)]
    pub spinning: bool,
    /// Execution provider to try first; default `cpu`. Falls back to CPU when unavailable.
    #[serde(default)]
    pub execution_provider: ExecutionProviderKind,
}

/// Execution providers by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProviderKind {
    /// The default CPU provider, always present.
    #[default]
    Cpu,
    /// NVIDIA CUDA.
    Cuda,
    /// NVIDIA TensorRT.
    Tensorrt,
    /// Intel OpenVINO.
    Openvino,
}

/// Why ONNX Runtime could not be found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A path given explicitly (flag, config or `ORT_DYLIB_PATH`) does not exist.
    #[error("onnx runtime library `{path}` (from {origin}) does not exist")]
    Missing {
        /// The path.
        path: PathBuf,
        /// Where it came from, e.g. `ORT_DYLIB_PATH`.
        origin: &'static str,
    },
    /// No library was given and none was found in the usual places.
    #[error(
        "onnx runtime library not found: set `--ort-lib`, the config or ORT_DYLIB_PATH (run `make setup` to fetch it); searched {searched:?}"
    )]
    NotFound {
        /// The places searched.
        searched: Vec<PathBuf>,
    },
    /// The file could not be loaded as a shared library (not a library, wrong architecture).
    #[error("failed to load onnx runtime library `{path}`")]
    Load {
        /// The file.
        path: PathBuf,
        /// The loader's error.
        #[source]
        source: ort::LoadDynamicError,
    },
    /// The library loaded but is not ONNX Runtime, or is older than this build needs (1.31+).
    #[error("`{path}` is not a usable onnx runtime library (1.{required}.x or newer is needed)")]
    WrongLibrary {
        /// The file.
        path: PathBuf,
        /// The minor version this build needs at least.
        required: u32,
        /// The loader's error.
        #[source]
        source: ort::LoadDynamicError,
    },
    /// Another ONNX Runtime library is already loaded in this process.
    #[error("onnx runtime is already loaded from `{loaded}`, cannot load `{requested}` too")]
    AlreadyLoaded {
        /// The library in use.
        loaded: PathBuf,
        /// The one asked for.
        requested: PathBuf,
    },
    /// Creating the environment failed.
    #[error("failed to create the onnx runtime environment")]
    Environment(#[source] ort::Error),
}

static LOADED: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);

impl Runtime {
    /// Finds the library: `explicit` (the `--ort-lib` flag or the config), else `ORT_DYLIB_PATH`,
    /// else [`LIBRARY_FILE`] beside the executable or in `../lib` from it, else the repository's
    /// `.cache/gridsense/onnxruntime/` (development builds).
    ///
    /// # Errors
    /// [`RuntimeError::Missing`] when an explicit path does not exist, [`RuntimeError::NotFound`]
    /// when nothing was found.
    pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, RuntimeError> {
        if let Some(path) = explicit {
            return existing(path, "--ort-lib or the config");
        }
        if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
            return existing(Path::new(&path), "ORT_DYLIB_PATH");
        }
        let mut searched = Vec::new();
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            searched.push(dir.join(LIBRARY_FILE));
            searched.push(dir.join("../lib").join(LIBRARY_FILE));
        }
        searched.push(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../.cache/gridsense/onnxruntime")
                .join(LIBRARY_FILE),
        );
        match searched.iter().find(|p| p.is_file()) {
            Some(found) => Ok(found.clone()),
            None => Err(RuntimeError::NotFound { searched }),
        }
    }

    /// Loads ONNX Runtime from `library` once for the process and returns the shared runtime; a
    /// second call with the same file returns the same runtime.
    ///
    /// # Errors
    /// [`RuntimeError::Missing`], [`RuntimeError::Load`], [`RuntimeError::WrongLibrary`],
    /// [`RuntimeError::AlreadyLoaded`] or [`RuntimeError::Environment`].
    pub fn load(library: &Path) -> Result<Arc<Runtime>, RuntimeError> {
        let mut loaded = LOADED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let requested = std::fs::canonicalize(library).map_err(|_| RuntimeError::Missing {
            path: library.to_owned(),
            origin: "the runtime configuration",
        })?;
        if let Some(runtime) = loaded.as_ref() {
            if runtime.library == requested {
                return Ok(Arc::clone(runtime));
            }
            return Err(RuntimeError::AlreadyLoaded {
                loaded: runtime.library.clone(),
                requested,
            });
        }
        let builder = ort::init_from(&requested).map_err(|source| match source {
            ort::LoadDynamicError::Dlopen { .. } => RuntimeError::Load {
                path: requested.clone(),
                source,
            },
            _ => RuntimeError::WrongLibrary {
                path: requested.clone(),
                required: ort::MINOR_VERSION,
                source,
            },
        })?;
        let environment = builder
            .with_name("gridsense")
            .with_telemetry(false)
            .build()
            .map_err(RuntimeError::Environment)?;
        tracing::info!(library = %requested.display(), "onnx runtime loaded");
        let runtime = Arc::new(Runtime {
            environment,
            library: requested,
        });
        *loaded = Some(Arc::clone(&runtime));
        Ok(runtime)
    }

    /// [`Runtime::locate`] then [`Runtime::load`].
    ///
    /// # Errors
    /// As those two.
    pub fn locate_and_load(explicit: Option<&Path>) -> Result<Arc<Runtime>, RuntimeError> {
        Self::load(&Self::locate(explicit)?)
    }

    /// The ONNX Runtime environment sessions are built in.
    pub fn environment(&self) -> &ort::environment::Environment {
        &self.environment
    }

    /// The library file in use (canonical path).
    pub fn library(&self) -> &Path {
        &self.library
    }
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            intra_threads: default_threads(),
            spinning: false,
            execution_provider: ExecutionProviderKind::Cpu,
        }
    }
}

impl ExecutionProviderKind {
    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::Tensorrt => "tensorrt",
            Self::Openvino => "openvino",
        }
    }
}

impl std::str::FromStr for ExecutionProviderKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "tensorrt" => Ok(Self::Tensorrt),
            "openvino" => Ok(Self::Openvino),
            other => Err(format!(
                "unknown execution provider `{other}` (expected cpu, cuda, tensorrt or openvino)"
            )),
        }
    }
}

impl std::fmt::Display for ExecutionProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn existing(path: &Path, origin: &'static str) -> Result<PathBuf, RuntimeError> {
    if path.exists() {
        Ok(path.to_owned())
    } else {
        Err(RuntimeError::Missing {
            path: path.to_owned(),
            origin,
        })
    }
}

fn default_threads() -> NonZeroUsize {
    NonZeroUsize::MIN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_providers_parse_by_name_and_refuse_others() {
        for kind in [
            ExecutionProviderKind::Cpu,
            ExecutionProviderKind::Cuda,
            ExecutionProviderKind::Tensorrt,
            ExecutionProviderKind::Openvino,
        ] {
            assert_eq!(kind.name().parse::<ExecutionProviderKind>(), Ok(kind));
        }
        assert!("gpu".parse::<ExecutionProviderKind>().is_err());
    }

    #[test]
    fn an_explicit_library_path_that_does_not_exist_is_reported_with_its_origin() {
        let err = Runtime::locate(Some(Path::new("/nonexistent/libonnxruntime.so"))).unwrap_err();
        assert!(matches!(
            err,
            RuntimeError::Missing {
                origin: "--ort-lib or the config",
                ..
            }
        ));
    }

    #[test]
    fn session_config_defaults_to_one_thread_without_spinning_on_cpu() {
        let cfg: SessionConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, SessionConfig::default());
        assert_eq!(cfg.intra_threads.get(), 1);
        assert!(!cfg.spinning);
    }
}
