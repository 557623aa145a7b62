//! Finding and loading profile files: one file, a directory of them, or a profile id looked up in the
//! search directories (`AMI_DEVICES_DIR`, `./devices`, the installed share directory …).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::profile::{parse_profile, ProfileError};
use crate::Profile;

/// Profiles larger than this are refused unread (real ones are a few kilobytes).
const MAX_PROFILE_BYTES: u64 = 4 * 1024 * 1024;

/// Loads and validates the profile at `path`. Errors name the path as given.
pub fn load_profile(path: &Path) -> Result<Profile, Vec<ProfileError>> {
    let (text, file) = read_profile_text(path)?;
    let mut profile = parse_profile(&text, &file)?;
    profile.path = Some(path.to_path_buf());
    Ok(profile)
}

/// Reads a profile file as text (size-limited, UTF-8, byte-order mark dropped) and the name errors use.
pub(crate) fn read_profile_text(path: &Path) -> Result<(String, String), Vec<ProfileError>> {
    let file = path.display().to_string();
    let bytes = read_limited(path).map_err(|message| vec![ProfileError::whole_file(&file, message)])?;
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(e) => {
            // Locate the first invalid byte in the valid prefix.
            let bytes = e.as_bytes();
            let valid_up_to = e.utf8_error().valid_up_to();
            let valid = bytes.get(..valid_up_to).and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("");
            let line = valid.bytes().filter(|&b| b == b'\n').count() + 1;
            let col = valid.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            return Err(vec![ProfileError {
                file,
                line: u32::try_from(line).unwrap_or(u32::MAX),
                col: u32::try_from(col).unwrap_or(u32::MAX),
                message: "file is not valid UTF-8".into(),
            }]);
        }
    };
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    };
    Ok((text, file))
}

fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read profile: {e}"))?;
    if meta.is_dir() {
        return Err("is a directory, not a profile file".into());
    }
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(format!(
            "file is {} bytes; profiles larger than {MAX_PROFILE_BYTES} bytes are refused",
            meta.len()
        ));
    }
    std::fs::read(path).map_err(|e| format!("cannot read profile: {e}"))
}

/// The `*.xml` files directly inside `dir`, sorted by name.
fn xml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Whether `s` names a file rather than a profile id: it contains a path separator or ends in `.xml`.
fn looks_like_path(s: &str) -> bool {
    s.contains('/') || s.contains(std::path::MAIN_SEPARATOR) || s.ends_with(".xml")
}

/// A set of loaded profiles, unique by id.
#[derive(Debug, Clone, Default)]
pub struct ProfileLibrary {
    profiles: Vec<Profile>,
}

impl ProfileLibrary {
    /// An empty library.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads every `*.xml` in `dir`. Files with errors are left out and their errors returned; two files
    /// with the same id are an error on the second (in name order).
    pub fn load_dir(dir: impl AsRef<Path>) -> (ProfileLibrary, Vec<ProfileError>) {
        let mut lib = ProfileLibrary::new();
        let errors = lib.add_dir(dir.as_ref(), true);
        (lib, errors)
    }

    /// Loads every search directory in order. Missing directories are skipped; a profile id found in an
    /// earlier directory shadows the same id in later ones (so `./devices` overrides the installed set).
    pub fn load_dirs(dirs: &[PathBuf]) -> (ProfileLibrary, Vec<ProfileError>) {
        let mut lib = ProfileLibrary::new();
        let mut errors = Vec::new();
        for dir in dirs {
            if dir.is_dir() {
                errors.extend(lib.add_dir(dir, false));
            }
        }
        (lib, errors)
    }

    fn add_dir(&mut self, dir: &Path, report_duplicates: bool) -> Vec<ProfileError> {
        let mut errors = Vec::new();
        let files = match xml_files(dir) {
            Ok(files) => files,
            Err(e) => {
                errors
                    .push(ProfileError::whole_file(&dir.display().to_string(), format!("cannot list directory: {e}")));
                return errors;
            }
        };
        let mut seen_here: HashMap<String, PathBuf> = HashMap::new();
        for file in files {
            match load_profile(&file) {
                Ok(p) => {
                    if let Some(first) = seen_here.get(&p.id) {
                        errors.push(ProfileError::whole_file(
                            &file.display().to_string(),
                            format!("duplicate profile id \"{}\" (also defined in {})", p.id, first.display()),
                        ));
                        continue;
                    }
                    seen_here.insert(p.id.clone(), file.clone());
                    if self.find_id(&p.id).is_some() {
                        if report_duplicates {
                            errors.push(ProfileError::whole_file(
                                &file.display().to_string(),
                                format!("duplicate profile id \"{}\"", p.id),
                            ));
                        }
                        continue;
                    }
                    self.profiles.push(p);
                }
                Err(e) => errors.extend(e),
            }
        }
        self.profiles.sort_by(|a, b| a.id.cmp(&b.id));
        errors
    }

    fn find_id(&self, id: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.id == id)
    }

    /// Finds a profile by id, by file stem, or (for a string with `/` or ending in `.xml`) by path.
    pub fn find(&self, id_or_path: &str) -> Option<&Profile> {
        if looks_like_path(id_or_path) {
            let wanted = Path::new(id_or_path);
            let canonical = wanted.canonicalize().ok();
            return self.profiles.iter().find(|p| {
                p.path.as_deref().is_some_and(|path| {
                    path == wanted || (canonical.is_some() && path.canonicalize().ok() == canonical)
                })
            });
        }
        self.find_id(id_or_path).or_else(|| {
            self.profiles.iter().find(|p| p.path.as_deref().and_then(Path::file_stem).is_some_and(|s| s == id_or_path))
        })
    }

    /// Every profile, sorted by id.
    pub fn profiles(&self) -> &[Profile] {
        &self.profiles
    }

    /// Number of profiles.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    /// Whether the library holds no profile.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }
}

/// Why [`resolve_profile`] found no usable profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// No file with that path, or no profile with that id (or file stem) in any search directory.
    NotFound {
        /// The id or path asked for.
        id: String,
        /// The directories searched (empty when a path was given).
        searched: Vec<PathBuf>,
    },
    /// The profile was found but is not valid.
    Invalid(Vec<ProfileError>),
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NotFound { id, searched } if searched.is_empty() => {
                write!(f, "profile file {id} not found")
            }
            ResolveError::NotFound { id, searched } => {
                let dirs: Vec<String> = searched.iter().map(|d| d.display().to_string()).collect();
                write!(f, "profile \"{id}\" not found (searched {})", dirs.join(", "))
            }
            ResolveError::Invalid(errors) => {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                f.write_str(&lines.join("\n"))
            }
        }
    }
}

impl std::error::Error for ResolveError {}

/// Resolves `--profile ID|PATH`. A string containing `/` or ending in `.xml` is a path; anything else is
/// an id, looked up in `search_dirs` in order: first `DIR/ID.xml`, then any `*.xml` whose `id`
/// attribute is `ID`. Broken unrelated files met during the search are ignored.
pub fn resolve_profile(id_or_path: &str, search_dirs: &[PathBuf]) -> Result<Profile, ResolveError> {
    if looks_like_path(id_or_path) {
        let path = Path::new(id_or_path);
        if !path.exists() {
            return Err(ResolveError::NotFound { id: id_or_path.to_string(), searched: Vec::new() });
        }
        return load_profile(path).map_err(ResolveError::Invalid);
    }
    for dir in search_dirs {
        let candidate = dir.join(format!("{id_or_path}.xml"));
        if candidate.is_file() {
            return load_profile(&candidate).map_err(ResolveError::Invalid);
        }
    }
    for dir in search_dirs {
        let Ok(files) = xml_files(dir) else { continue };
        for file in files {
            if let Ok(p) = load_profile(&file) {
                if p.id == id_or_path {
                    return Ok(p);
                }
            }
        }
    }
    Err(ResolveError::NotFound { id: id_or_path.to_string(), searched: search_dirs.to_vec() })
}

/// Where profiles are looked up, in order: each directory in `AMI_DEVICES_DIR` (a path list), `./devices`,
/// `<exe dir>/../share/ami/devices`, `/usr/share/ami/devices`, and the source tree's `devices/` (so
/// `cargo run` works from anywhere).
pub fn default_search_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(v) = std::env::var_os("AMI_DEVICES_DIR") {
        dirs.extend(std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()));
    }
    dirs.push(PathBuf::from("devices"));
    if let Some(bin) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        dirs.push(bin.join("../share/ami/devices"));
    }
    dirs.push(PathBuf::from("/usr/share/ami/devices"));
    dirs.push(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../devices")));
    let mut unique = Vec::new();
    for d in dirs {
        if !unique.contains(&d) {
            unique.push(d);
        }
    }
    unique
}

/// Validates files and directories (a directory means its `*.xml` files), as `amid profiles check`
/// does. Returns every error; an empty vector means everything is valid. Two checked files with the
/// same profile id are an error on the second.
pub fn check_paths(paths: &[PathBuf]) -> Vec<ProfileError> {
    let mut errors = Vec::new();
    let mut ids: HashMap<String, PathBuf> = HashMap::new();
    for path in paths {
        let files = if path.is_dir() {
            match xml_files(path) {
                Ok(files) if files.is_empty() => {
                    errors
                        .push(ProfileError::whole_file(&path.display().to_string(), "no *.xml profiles in directory"));
                    continue;
                }
                Ok(files) => files,
                Err(e) => {
                    errors.push(ProfileError::whole_file(
                        &path.display().to_string(),
                        format!("cannot list directory: {e}"),
                    ));
                    continue;
                }
            }
        } else {
            vec![path.clone()]
        };
        for file in files {
            match load_profile(&file) {
                Ok(p) => {
                    if let Some(first) = ids.get(&p.id) {
                        if first != &file {
                            errors.push(ProfileError::whole_file(
                                &file.display().to_string(),
                                format!("duplicate profile id \"{}\" (also defined in {})", p.id, first.display()),
                            ));
                        }
                    } else {
                        ids.insert(p.id, file);
                    }
                }
                Err(e) => errors.extend(e),
            }
        }
    }
    errors
}
