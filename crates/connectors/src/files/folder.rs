//! A drop folder: a local directory or an object-store prefix, and when a file in it is
//! finished.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::FilesError;
use crate::lake::S3Options;

/// When a file counts as completely written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyRule {
    /// Its size, modification time and ETag were the same in listings at least this far
    /// apart (for writers that write in place and cannot signal the end).
    Stable(Duration),
    /// An object named `<file>.done` exists (the writer creates it after the file).
    Marker,
}

/// One file of a drop folder, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    /// The name relative to the folder (`products_2026-03-01.csv`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ms since the Unix epoch.
    pub modified_ms: i64,
    /// The store's entity tag, when it has one.
    pub e_tag: Option<String>,
}

/// A folder files are dropped into.
pub struct DropFolder {
    store: Arc<dyn ObjectStore>,
    prefix: Option<StorePath>,
    describe: String,
    /// Files seen but not yet stable: (size, mtime, etag) and when that was first seen.
    pending: HashMap<String, (FileMeta, Instant)>,
}

impl std::fmt::Debug for DropFolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe)
    }
}

impl DropFolder {
    /// A local directory (created if missing).
    pub fn local(dir: &std::path::Path) -> Result<Self, FilesError> {
        std::fs::create_dir_all(dir).map_err(|e| FilesError::Config {
            key: "csv.dir".into(),
            reason: format!("creating {}: {e}", dir.display()),
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| {
            FilesError::Config {
                key: "csv.dir".into(),
                reason: format!("{}: {e}", dir.display()),
            }
        })?;
        Ok(DropFolder {
            store: Arc::new(store),
            prefix: None,
            describe: dir.display().to_string(),
            pending: HashMap::new(),
        })
    }

    /// An S3 prefix, `s3://bucket/some/prefix`. Credentials come from `s3` or the usual
    /// `AWS_*` variables.
    pub fn s3(url: &str, s3: &S3Options) -> Result<Self, FilesError> {
        let bad = |reason: String| FilesError::Config {
            key: "csv.url".into(),
            reason,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad(format!("`{url}` is not s3://bucket/prefix")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad(format!("`{url}` names no bucket")));
        }
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        if let Some(e) = &s3.endpoint {
            builder = builder
                .with_endpoint(e)
                .with_allow_http(e.starts_with("http://"));
        }
        builder = builder.with_region(s3.region.as_deref().unwrap_or("us-east-1"));
        if let Some(k) = &s3.access_key_id {
            builder = builder.with_access_key_id(k);
        }
        if let Some(k) = &s3.secret_access_key {
            builder = builder.with_secret_access_key(k.expose());
        }
        builder = builder.with_virtual_hosted_style_request(!s3.path_style);
        let store = builder.build().map_err(|e| bad(e.to_string()))?;
        let prefix = prefix.trim_matches('/');
        Ok(DropFolder {
            store: Arc::new(store),
            prefix: (!prefix.is_empty()).then(|| StorePath::from(prefix)),
            describe: url.to_string(),
            pending: HashMap::new(),
        })
    }

    fn location(&self, name: &str) -> StorePath {
        match &self.prefix {
            Some(p) => p.clone().join(name),
            None => StorePath::from(name),
        }
    }

    /// Every file directly in the folder whose name ends with `.{extension}`
    /// (case-insensitive), with the marker files, in name order.
    async fn list_all(&self) -> Result<Vec<FileMeta>, FilesError> {
        let objects: Vec<object_store::ObjectMeta> = self
            .store
            .list(self.prefix.as_ref())
            .try_collect()
            .await
            .map_err(|source| FilesError::Store {
                context: format!("listing {}", self.describe),
                source,
            })?;
        let strip = self.prefix.as_ref().map(|p| format!("{p}/"));
        let mut out: Vec<FileMeta> = objects
            .into_iter()
            .filter_map(|o| {
                let full = o.location.to_string();
                let name = match &strip {
                    Some(s) => full.strip_prefix(s.as_str())?.to_string(),
                    None => full,
                };
                // Only the folder itself, not sub-folders.
                (!name.contains('/')).then(|| FileMeta {
                    name,
                    size: o.size,
                    modified_ms: o.last_modified.timestamp_millis(),
                    e_tag: o.e_tag,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The finished files with the given extension, in name order. With
    /// [`ReadyRule::Stable`], a file must be seen unchanged by two calls at least the settle
    /// time apart; `pending` (files seen but not finished yet) is reported too.
    pub async fn finished(
        &mut self,
        extension: &str,
        rule: ReadyRule,
    ) -> Result<(Vec<FileMeta>, usize), FilesError> {
        let all = self.list_all().await?;
        let dot_ext = format!(".{}", extension.to_ascii_lowercase());
        let is_data = |n: &str| n.to_ascii_lowercase().ends_with(&dot_ext);
        let mut ready = Vec::new();
        let mut pending = 0;
        match rule {
            ReadyRule::Marker => {
                let markers: std::collections::HashSet<&str> = all
                    .iter()
                    .filter_map(|f| f.name.strip_suffix(".done"))
                    .collect();
                for f in all.iter().filter(|f| is_data(&f.name)) {
                    if markers.contains(f.name.as_str()) {
                        ready.push(f.clone());
                    } else {
                        pending += 1;
                    }
                }
            }
            ReadyRule::Stable(settle) => {
                let now = Instant::now();
                let mut seen = HashMap::new();
                for f in all.into_iter().filter(|f| is_data(&f.name)) {
                    let since = match self.pending.get(&f.name) {
                        Some((prev, since)) if *prev == f => *since,
                        _ => now,
                    };
                    if now.duration_since(since) >= settle {
                        ready.push(f.clone());
                    } else {
                        pending += 1;
                    }
                    seen.insert(f.name.clone(), (f, since));
                }
                self.pending = seen;
            }
        }
        Ok((ready, pending))
    }

    /// The content of a file.
    pub async fn read(&self, name: &str) -> Result<bytes::Bytes, FilesError> {
        let location = self.location(name);
        let got = self
            .store
            .get(&location)
            .await
            .map_err(|source| FilesError::Store {
                context: format!("reading {name} in {}", self.describe),
                source,
            })?;
        got.bytes().await.map_err(|source| FilesError::Store {
            context: format!("reading {name} in {}", self.describe),
            source,
        })
    }
}
