//! The ingest loop: finished files → messages → Kafka, each message once.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};
use sha2::{Digest, Sha256};

use super::{DropFolder, FileEntry, FileMeta, FileState, FilesError, Ledger, ReadyRule};
use crate::kafka::admin::end_offsets;
use crate::kafka::producer::ReliableProducer;
use crate::kafka::{KafkaConfig, KafkaConnectorError, SOURCE_HEADER};

/// Header: SHA-256 (hex) of the file a message came from.
pub const FILE_HEADER: &str = "alluvium-file";
/// Header: the message's 0-based index among its file's messages.
pub const RECORD_HEADER: &str = "alluvium-record";

/// How long a read-back waits after the last message before it trusts it saw everything
/// (some brokers report end offsets that lag behind what they hold).
const READ_BACK_QUIET: Duration = Duration::from_millis(750);

/// One message made from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMessage {
    /// Kafka key.
    pub key: Option<Vec<u8>>,
    /// Kafka value.
    pub payload: Vec<u8>,
}

/// What to ingest and how.
#[derive(Clone, Debug)]
pub struct IngestOptions {
    /// Target topic.
    pub topic: String,
    /// File extension taken from the folder (`csv`), case-insensitive.
    pub extension: String,
    /// When a file is finished.
    pub ready: ReadyRule,
    /// Bronze `_source` is this followed by the file name (`csv:`).
    pub source_prefix: String,
    /// Messages sent between two waits for acknowledgements.
    pub chunk: usize,
}

impl IngestOptions {
    /// Options for `topic`: `.csv` files, stable for 2 s, source `csv:<file>`, chunks of 5 000.
    pub fn csv(topic: impl Into<String>) -> Self {
        IngestOptions {
            topic: topic.into(),
            extension: "csv".into(),
            ready: ReadyRule::Stable(Duration::from_secs(2)),
            source_prefix: "csv:".into(),
            chunk: 5_000,
        }
    }
}

/// What happened to one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReport {
    /// File name.
    pub name: String,
    /// Content hash.
    pub sha256: String,
    /// Messages the file gives.
    pub records: u64,
    /// Messages sent now (less than `records` when a crashed run had sent some).
    pub sent: u64,
    /// Whether an interrupted ingestion was resumed.
    pub resumed: bool,
}

/// Ingests the finished files of a [`DropFolder`] into a topic, once each.
pub struct FileIngester<F> {
    folder: DropFolder,
    ledger: Ledger,
    kafka: KafkaConfig,
    options: IngestOptions,
    convert: F,
    runtime: tokio::runtime::Runtime,
}

impl<F> FileIngester<F>
where
    F: FnMut(&str, &[u8], &mut dyn FnMut(FileMessage)),
{
    /// An ingester; `convert` turns a file (name, content) into its messages, in order,
    /// handing each to the given callback as it is made (so a large file is never held as
    /// messages all at once). It must be deterministic: a resume relies on the same file
    /// giving the same messages.
    pub fn new(
        folder: DropFolder,
        ledger: Ledger,
        kafka: KafkaConfig,
        options: IngestOptions,
        convert: F,
    ) -> Result<Self, FilesError> {
        kafka.validate()?;
        if options.topic.is_empty() {
            return Err(FilesError::Config {
                key: "csv.topic".into(),
                reason: "is empty".into(),
            });
        }
        if options.chunk == 0 {
            return Err(FilesError::Config {
                key: "csv.chunk".into(),
                reason: "must be at least 1".into(),
            });
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| FilesError::Config {
                key: "runtime".into(),
                reason: format!("could not start an async runtime: {e}"),
            })?;
        Ok(FileIngester {
            folder,
            ledger,
            kafka,
            options,
            convert,
            runtime,
        })
    }

    /// The ledger (for reporting).
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// One pass: ingests every finished file that is not done yet, in name order. Returns
    /// what was ingested and how many files are still being written.
    pub fn pass(&mut self) -> Result<(Vec<FileReport>, usize), FilesError> {
        let (ready, pending) = self.runtime.block_on(
            self.folder
                .finished(&self.options.extension, self.options.ready),
        )?;
        let mut reports = Vec::new();
        for meta in ready {
            if let Some(r) = self.ingest(&meta)? {
                reports.push(r);
            }
        }
        Ok((reports, pending))
    }

    fn ingest(&mut self, meta: &FileMeta) -> Result<Option<FileReport>, FilesError> {
        if self.ledger.is_done_listing(
            &meta.name,
            meta.size,
            meta.modified_ms,
            meta.e_tag.as_deref(),
        ) {
            return Ok(None);
        }
        let bytes = self.runtime.block_on(self.folder.read(&meta.name))?;
        let sha256 = hex(&Sha256::digest(&bytes));
        if self.ledger.is_done(&meta.name, &sha256) {
            return Ok(None);
        }
        let topic = self.options.topic.clone();
        let resumed = self.ledger.get(&meta.name, &sha256).is_some();
        let (entry, present) = match self.ledger.get(&meta.name, &sha256) {
            Some(e) => {
                let present = read_back(&self.kafka, &topic, &e.start_offsets, &sha256)?;
                tracing::info!(file = %meta.name, already = present.len(), of = e.records, "resuming an interrupted file");
                (e.clone(), present)
            }
            None => {
                let start_offsets: BTreeMap<i32, i64> =
                    end_offsets(&self.kafka, &topic)?.into_iter().collect();
                let entry = FileEntry {
                    name: meta.name.clone(),
                    sha256: sha256.clone(),
                    size: bytes.len() as u64,
                    modified_ms: meta.modified_ms,
                    e_tag: meta.e_tag.clone(),
                    // Known once the file was sent through.
                    records: 0,
                    state: FileState::Producing,
                    start_offsets,
                    started_ms: now_ms(),
                    finished_ms: 0,
                };
                // Noted before the first message, so a crash from here on is resumable.
                self.ledger.record(entry.clone())?;
                (entry, HashSet::new())
            }
        };
        let producer = ReliableProducer::new(&self.kafka)?;
        let source = format!("{}{}", self.options.source_prefix, meta.name);
        let chunk = self.options.chunk;
        let (mut index, mut sent, mut unflushed) = (0u64, 0u64, 0usize);
        let mut failure: Option<FilesError> = None;
        (self.convert)(&meta.name, &bytes, &mut |m: FileMessage| {
            let i = index;
            index += 1;
            if failure.is_some() || present.contains(&i) {
                return;
            }
            let index_text = i.to_string();
            let headers = OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: SOURCE_HEADER,
                    value: Some(source.as_bytes()),
                })
                .insert(Header {
                    key: FILE_HEADER,
                    value: Some(sha256.as_bytes()),
                })
                .insert(Header {
                    key: RECORD_HEADER,
                    value: Some(index_text.as_bytes()),
                });
            if let Err(e) =
                producer.send_with_headers(&topic, m.key.as_deref(), &m.payload, Some(headers))
            {
                failure = Some(e.into());
                return;
            }
            sent += 1;
            unflushed += 1;
            if unflushed == chunk {
                if let Err(e) = producer.flush(Duration::from_secs(60)) {
                    failure = Some(e.into());
                    return;
                }
                unflushed = 0;
                alluvium_engine::failpoint::hit("file_chunk_acked", &meta.name);
            }
        });
        if let Some(e) = failure {
            return Err(e);
        }
        let records = index;
        producer.flush(Duration::from_secs(60))?;
        self.ledger.record(FileEntry {
            state: FileState::Done,
            records,
            finished_ms: now_ms(),
            ..entry
        })?;
        tracing::info!(file = %meta.name, records, sent, "file ingested");
        Ok(Some(FileReport {
            name: meta.name.clone(),
            sha256,
            records,
            sent,
            resumed,
        }))
    }

    /// Runs passes every `poll` until `stop` says so. With `until_idle`, returns once a pass
    /// found nothing to ingest and no file still being written.
    pub fn run(
        &mut self,
        poll: Duration,
        until_idle: bool,
        mut stop: impl FnMut() -> bool,
    ) -> Result<Vec<FileReport>, FilesError> {
        let mut all = Vec::new();
        let mut backoff = Duration::from_millis(500);
        while !stop() {
            match self.pass() {
                Ok((reports, pending)) => {
                    backoff = Duration::from_millis(500);
                    let idle = reports.is_empty() && pending == 0;
                    all.extend(reports);
                    if until_idle && idle {
                        break;
                    }
                    std::thread::sleep(poll);
                }
                // Brokers and stores come back: retried with backoff, and reported.
                Err(e @ (FilesError::Kafka(_) | FilesError::Store { .. })) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "file ingest pass failed");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(all)
    }
}

/// The record indices of file `sha256` already in `topic`, read from `start_offsets` on.
fn read_back(
    kafka: &KafkaConfig,
    topic: &str,
    start_offsets: &BTreeMap<i32, i64>,
    sha256: &str,
) -> Result<HashSet<u64>, FilesError> {
    let client_err = |context: &str, source| {
        FilesError::Kafka(KafkaConnectorError::Client {
            context: context.into(),
            source,
        })
    };
    let ends: BTreeMap<i32, i64> = end_offsets(kafka, topic)?.into_iter().collect();
    let consumer: BaseConsumer = kafka
        .client_config()
        .set("enable.auto.commit", "false")
        .set("group.id", "alluvium-file-read-back")
        .create()
        .map_err(|e| client_err("creating a Kafka consumer", e))?;
    let mut tpl = TopicPartitionList::new();
    for (&p, &end) in &ends {
        let start = start_offsets.get(&p).copied().unwrap_or(0);
        tpl.add_partition_offset(topic, p, Offset::Offset(start.min(end)))
            .map_err(|e| client_err("assigning partitions", e))?;
    }
    consumer
        .assign(&tpl)
        .map_err(|e| client_err("assigning partitions", e))?;
    let mut reached: BTreeMap<i32, bool> = ends
        .iter()
        .map(|(&p, &end)| (p, start_offsets.get(&p).copied().unwrap_or(0) >= end))
        .collect();
    let mut present = HashSet::new();
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = Instant::now();
                if m.offset() + 1 >= ends.get(&m.partition()).copied().unwrap_or(0) {
                    reached.insert(m.partition(), true);
                }
                let Some(headers) = m.headers() else { continue };
                let mut file = None;
                let mut record = None;
                for h in headers.iter() {
                    if h.key == FILE_HEADER {
                        file = h.value;
                    } else if h.key == RECORD_HEADER {
                        record = h
                            .value
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .and_then(|v| v.parse::<u64>().ok());
                    }
                }
                if let (Some(f), Some(r)) = (file, record) {
                    if f == sha256.as_bytes() {
                        present.insert(r);
                    }
                }
            }
            Some(Err(e)) => return Err(client_err(&format!("reading {topic} back"), e)),
            None => {
                if reached.values().all(|r| *r) && last.elapsed() >= READ_BACK_QUIET {
                    return Ok(present);
                }
                if Instant::now() > deadline {
                    return Err(FilesError::Config {
                        key: "csv.resume".into(),
                        reason: format!(
                            "reading {topic} back did not reach its end offsets in 300 s"
                        ),
                    });
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
