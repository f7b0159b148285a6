//! A durable file sink: the materialized collection as one JSON document per commit.
//!
//! Each commit applies the epoch's changes to the rows of the previous commit and replaces
//! `state.json` atomically (write a temporary file, fsync, rename, fsync the directory), with
//! the epoch and the source positions inside the same document — so the table and its
//! checkpoint can never disagree. Each commit also appends its epoch to `commits.log`, which
//! makes double commits visible to tests.
//!
//! It suits small tables: tests, demos, and control data. Every commit rewrites the whole table.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::epoch::Epoch;
use crate::position::{Checkpoint, Positions};
use crate::sink::{Sink, SinkCommitter, SinkError, SinkWriter};

const STATE: &str = "state.json";
const LOG: &str = "commits.log";

/// The document stored in `state.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(deserialize = "D: DeserializeOwned"))]
pub struct FileState<D> {
    /// The last committed epoch.
    pub epoch: Epoch,
    /// The source positions at the end of that epoch.
    pub positions: Positions,
    /// The rows of the collection with their multiplicities.
    pub rows: Vec<(D, isize)>,
}

impl<D> FileState<D> {
    /// The rows, each repeated by its multiplicity.
    pub fn expanded_rows(self) -> Vec<D>
    where
        D: Clone,
    {
        self.rows
            .into_iter()
            .flat_map(|(r, n)| std::iter::repeat_n(r, n.max(0) as usize))
            .collect()
    }
}

/// A sink that keeps a collection in `dir/state.json`.
#[derive(Debug)]
pub struct FileSink<D> {
    dir: PathBuf,
    _rows: PhantomData<fn() -> D>,
}

impl<D> Clone for FileSink<D> {
    fn clone(&self) -> Self {
        FileSink {
            dir: self.dir.clone(),
            _rows: PhantomData,
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SinkError {
    let context = context.into();
    move |source| SinkError::Io { context, source }
}

impl<D> FileSink<D>
where
    D: Serialize + DeserializeOwned + Ord + Clone + Send + 'static,
{
    /// A sink in `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileSink {
            dir: dir.into(),
            _rows: PhantomData,
        }
    }

    /// Reads the committed state, if any commit happened.
    pub fn read_state(&self) -> Result<Option<FileState<D>>, SinkError> {
        read_state(&self.dir)
    }

    /// The epochs committed so far, in commit order (from `commits.log`).
    pub fn commit_log(&self) -> Result<Vec<Epoch>, SinkError> {
        let path = self.dir.join(LOG);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        };
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.trim().parse::<Epoch>().map_err(|e| {
                    SinkError::Fatal(format!("{}: bad line `{l}`: {e}", path.display()))
                })
            })
            .collect()
    }
}

fn read_state<D: DeserializeOwned>(dir: &Path) -> Result<Option<FileState<D>>, SinkError> {
    let path = dir.join(STATE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| SinkError::Fatal(format!("{} is corrupt: {e}", path.display())))
}

impl<D> Sink<D> for FileSink<D>
where
    D: Serialize + DeserializeOwned + Ord + Clone + Send + 'static,
{
    type Staged = Vec<(D, isize)>;
    type Writer = FileWriter<D>;
    type Committer = FileCommitter<D>;

    fn name(&self) -> String {
        format!("file:{}", self.dir.display())
    }

    fn checkpoint(&self) -> Result<Option<Checkpoint>, SinkError> {
        Ok(read_state::<D>(&self.dir)?.map(|s| Checkpoint {
            epoch: s.epoch,
            positions: s.positions,
        }))
    }

    fn writer(&self, _worker: usize) -> Result<FileWriter<D>, SinkError> {
        Ok(FileWriter { _rows: PhantomData })
    }

    fn committer(&self) -> Result<FileCommitter<D>, SinkError> {
        fs::create_dir_all(&self.dir).map_err(io(format!("creating {}", self.dir.display())))?;
        let rows = read_state::<D>(&self.dir)?
            .map(|s| s.rows.into_iter().collect())
            .unwrap_or_default();
        Ok(FileCommitter {
            dir: self.dir.clone(),
            rows,
        })
    }
}

/// Stages rows by handing them to the committer (the table is small by design).
#[derive(Debug)]
pub struct FileWriter<D> {
    _rows: PhantomData<fn() -> D>,
}

impl<D: Clone + Send + Serialize + DeserializeOwned + 'static> SinkWriter<D> for FileWriter<D> {
    type Staged = Vec<(D, isize)>;

    fn stage(
        &mut self,
        _epoch: Epoch,
        updates: &[(D, isize)],
    ) -> Result<Option<Self::Staged>, SinkError> {
        Ok(Some(updates.to_vec()))
    }
}

/// Applies staged changes to the table and replaces `state.json` atomically.
#[derive(Debug)]
pub struct FileCommitter<D> {
    dir: PathBuf,
    rows: BTreeMap<D, isize>,
}

impl<D> SinkCommitter for FileCommitter<D>
where
    D: Serialize + DeserializeOwned + Ord + Clone + 'static,
{
    type Staged = Vec<(D, isize)>;

    fn commit(
        &mut self,
        epoch: Epoch,
        staged: &[Self::Staged],
        positions: &Positions,
    ) -> Result<(), SinkError> {
        let mut rows = self.rows.clone();
        for (row, diff) in staged.iter().flatten() {
            let count = rows.entry(row.clone()).or_insert(0);
            *count += diff;
            if *count == 0 {
                rows.remove(row);
            } else if *count < 0 {
                // A retraction of a row the table does not hold: the dataflow's state differs
                // from what was committed (e.g. a replay that read other records than the
                // original run). Refuse rather than store a negative row.
                return Err(SinkError::Fatal(format!(
                    "epoch {epoch} retracts a row the table does not hold ({} after the change); \
                     the pipeline's state and the committed table disagree",
                    count
                )));
            }
        }
        let state = FileState {
            epoch,
            positions: positions.clone(),
            rows: rows.iter().map(|(r, c)| (r.clone(), *c)).collect(),
        };
        let tmp = self.dir.join(format!("{STATE}.tmp"));
        let bytes = serde_json::to_vec(&state)
            .map_err(|e| SinkError::Fatal(format!("encoding the state: {e}")))?;
        {
            let mut f = File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
            f.write_all(&bytes)
                .map_err(io(format!("writing {}", tmp.display())))?;
            f.sync_all()
                .map_err(io(format!("syncing {}", tmp.display())))?;
        }
        let path = self.dir.join(STATE);
        fs::rename(&tmp, &path).map_err(io(format!(
            "renaming {} to {}",
            tmp.display(),
            path.display()
        )))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io(format!("syncing {}", self.dir.display())))?;
        self.rows = rows;
        let log = self.dir.join(LOG);
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io(format!("opening {}", log.display())))?;
        writeln!(f, "{epoch}").map_err(io(format!("appending to {}", log.display())))?;
        f.sync_data()
            .map_err(io(format!("syncing {}", log.display())))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retraction_of_a_missing_row_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sink = FileSink::<String>::new(dir.path());
        let mut committer = sink.committer().unwrap();
        let positions = Positions::default();
        committer
            .commit(1, &[vec![("a".to_string(), 1)]], &positions)
            .unwrap();
        let err = committer
            .commit(2, &[vec![("b".to_string(), -1)]], &positions)
            .unwrap_err();
        assert!(err.to_string().contains("epoch 2 retracts"), "{err}");
        // The table is unchanged: still the commit of epoch 1.
        let state = sink.read_state().unwrap().unwrap();
        assert_eq!((state.epoch, state.rows), (1, vec![("a".to_string(), 1)]));
    }
}
