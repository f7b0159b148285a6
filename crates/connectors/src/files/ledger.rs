//! The durable record of which files were ingested.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::FilesError;

/// Where a file is in its ingestion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// Messages are being sent; a restart resumes it by reading the topic back.
    Producing,
    /// Every message is acknowledged by the broker.
    Done,
}

/// One file of the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Name in the drop folder.
    pub name: String,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time as listed, ms since the Unix epoch (0 when unknown).
    #[serde(default)]
    pub modified_ms: i64,
    /// The store's entity tag as listed.
    #[serde(default)]
    pub e_tag: Option<String>,
    /// Messages the file gives (known once it was parsed).
    pub records: u64,
    /// Progress.
    pub state: FileState,
    /// The topic's end offsets (partition → offset) noted before the first message was
    /// sent: a resume reads back from here.
    pub start_offsets: BTreeMap<i32, i64>,
    /// When ingestion started / finished, ms since the Unix epoch.
    pub started_ms: i64,
    /// When it finished (0 while producing).
    pub finished_ms: i64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct LedgerFile {
    version: u32,
    files: Vec<FileEntry>,
}

/// The ledger: a JSON file, replaced atomically (write, fsync, rename, fsync the directory)
/// on every change, so a crash leaves either the old or the new version.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    /// Keyed by (name, sha256).
    files: BTreeMap<(String, String), FileEntry>,
}

impl Ledger {
    /// Opens the ledger at `path`, empty if the file does not exist yet.
    pub fn open(path: &Path) -> Result<Self, FilesError> {
        let err = |reason: String| FilesError::Ledger {
            path: path.display().to_string(),
            reason,
        };
        let files = match std::fs::read(path) {
            Ok(bytes) => {
                let file: LedgerFile = serde_json::from_slice(&bytes)
                    .map_err(|e| err(format!("not a ledger: {e}")))?;
                if file.version != 1 {
                    return Err(err(format!("unknown version {}", file.version)));
                }
                file.files
                    .into_iter()
                    .map(|f| ((f.name.clone(), f.sha256.clone()), f))
                    .collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(err(e.to_string())),
        };
        Ok(Ledger {
            path: path.to_path_buf(),
            files,
        })
    }

    /// The entry of a file's content, if any.
    pub fn get(&self, name: &str, sha256: &str) -> Option<&FileEntry> {
        self.files.get(&(name.to_string(), sha256.to_string()))
    }

    /// Whether this name was already ingested with this exact content.
    pub fn is_done(&self, name: &str, sha256: &str) -> bool {
        self.get(name, sha256)
            .is_some_and(|f| f.state == FileState::Done)
    }

    /// Whether a file listed with this name, size, modification time and ETag was already
    /// ingested — so a long-running ingester does not read and hash every old file again on
    /// every poll. (A file rewritten in place changes at least its modification time.)
    pub fn is_done_listing(
        &self,
        name: &str,
        size: u64,
        modified_ms: i64,
        e_tag: Option<&str>,
    ) -> bool {
        self.files.values().any(|f| {
            f.state == FileState::Done
                && f.name == name
                && f.size == size
                && f.modified_ms == modified_ms
                && f.modified_ms != 0
                && f.e_tag.as_deref() == e_tag
        })
    }

    /// Every entry, by name then hash.
    pub fn entries(&self) -> impl Iterator<Item = &FileEntry> {
        self.files.values()
    }

    /// Records `entry` durably (replacing the previous one of the same name and content).
    pub fn record(&mut self, entry: FileEntry) -> Result<(), FilesError> {
        self.files
            .insert((entry.name.clone(), entry.sha256.clone()), entry);
        self.save()
    }

    fn save(&self) -> Result<(), FilesError> {
        let err = |reason: String| FilesError::Ledger {
            path: self.path.display().to_string(),
            reason,
        };
        let file = LedgerFile {
            version: 1,
            files: self.files.values().cloned().collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| err(e.to_string()))?;
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| err(e.to_string()))?;
        f.write_all(&bytes).map_err(|e| err(e.to_string()))?;
        f.sync_all().map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| err(e.to_string()))?;
        if let Ok(d) = std::fs::File::open(dir) {
            // Makes the rename itself durable; not every file system supports it.
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, hash: &str, state: FileState) -> FileEntry {
        FileEntry {
            name: name.into(),
            sha256: hash.into(),
            size: 10,
            modified_ms: 0,
            e_tag: None,
            records: 3,
            state,
            start_offsets: BTreeMap::from([(0, 5), (1, 7)]),
            started_ms: 1,
            finished_ms: 2,
        }
    }

    #[test]
    fn survives_reopen_and_keys_by_name_and_content() -> Result<(), FilesError> {
        let dir = tempfile::tempdir().map_err(|e| FilesError::Ledger {
            path: "tmp".into(),
            reason: e.to_string(),
        })?;
        let path = dir.path().join("state/ledger.json");
        let mut l = Ledger::open(&path)?;
        l.record(entry("a.csv", "h1", FileState::Producing))?;
        l.record(entry("a.csv", "h1", FileState::Done))?;
        l.record(entry("a.csv", "h2", FileState::Producing))?;
        let l = Ledger::open(&path)?;
        assert!(l.is_done("a.csv", "h1"));
        assert!(
            !l.is_done("a.csv", "h2"),
            "same name, new content: a new file"
        );
        assert!(!l.is_done("b.csv", "h1"));
        assert_eq!(l.entries().count(), 2);
        assert_eq!(
            l.get("a.csv", "h2").map(|e| e.start_offsets.clone()),
            Some(BTreeMap::from([(0, 5), (1, 7)]))
        );
        Ok(())
    }

    #[test]
    fn done_listings_are_recognised_without_reading() -> Result<(), FilesError> {
        let dir = tempfile::tempdir().map_err(|e| FilesError::Ledger {
            path: "tmp".into(),
            reason: e.to_string(),
        })?;
        let mut l = Ledger::open(&dir.path().join("l.json"))?;
        let mut e = entry("a.csv", "h1", FileState::Done);
        e.modified_ms = 1_000;
        e.e_tag = Some("t1".into());
        l.record(e)?;
        assert!(l.is_done_listing("a.csv", 10, 1_000, Some("t1")));
        assert!(
            !l.is_done_listing("a.csv", 10, 2_000, Some("t1")),
            "rewritten: read again"
        );
        assert!(!l.is_done_listing("a.csv", 11, 1_000, Some("t1")));
        assert!(!l.is_done_listing("a.csv", 10, 1_000, Some("t2")));
        assert!(!l.is_done_listing("b.csv", 10, 1_000, Some("t1")));
        l.record(entry("c.csv", "h2", FileState::Done))?;
        assert!(
            !l.is_done_listing("c.csv", 10, 0, None),
            "no listing recorded: read to be sure"
        );
        Ok(())
    }

    #[test]
    fn a_corrupt_ledger_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.json");
        std::fs::write(&path, b"{oops").unwrap();
        let err = Ledger::open(&path).unwrap_err().to_string();
        assert!(
            err.contains("ledger.json") && err.contains("not a ledger"),
            "{err}"
        );
    }
}
