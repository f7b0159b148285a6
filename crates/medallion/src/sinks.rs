//! Where the pipeline's outputs go, whatever the source: the file tables, the Iceberg lake and
//! the PostgreSQL warehouse, each committed per epoch through the engine's commit protocol.
//!
//! `alluvium run` (Kafka), the in-memory runner and the demo attach the same sinks the same
//! way: [`PipelineSinks::checkpoints`] for the resume plan, then [`PipelineSinks::attach`] in
//! every worker's dataflow. Every sink's positions wait for the data-quality gate
//! ([`alluvium_engine::barrier::after`]), so an epoch a rule refuses is committed nowhere.

use alluvium_connectors::warehouse::PgSink;
use alluvium_engine::sink::retry_transient;
use alluvium_engine::sinks::file::FileSink;
use alluvium_engine::{
    appended_epochs, commit_changes, consolidate_epochs, Checkpoint, Epoch, ResumePlan, Sink,
    SinkError, WorkerContext,
};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::StreamVec;

use crate::graph::Outputs;
use crate::lake::LakeSinks;
use crate::rows::TableRow;

/// The sinks of one run (any of them optional).
#[derive(Default)]
pub struct PipelineSinks {
    /// Every silver/gold table, the quarantine counts and `dq.results` in a file table.
    pub table: Option<FileSink<TableRow>>,
    /// The Iceberg lake (silver/gold/dq, quarantine, bronze).
    pub lake: Option<LakeSinks>,
    /// The PostgreSQL warehouse (gold tables and `dq.results`).
    pub warehouse: Option<PgSink<TableRow>>,
}

impl PipelineSinks {
    /// Claims every sink for this run ([`Sink::claim`]): earlier instances of the pipeline
    /// on the same lake or warehouse can commit nothing more. Call it before
    /// [`PipelineSinks::checkpoints`], on the process of worker 0.
    pub fn claim(&self) -> Result<(), SinkError> {
        if let Some(t) = &self.table {
            t.claim()?;
        }
        if let Some(w) = &self.warehouse {
            w.claim()?;
        }
        if let Some(l) = &self.lake {
            // One lease for the three: the first claims it. A catalog that is starting or a
            // moment away is retried with backoff, as a commit would be (a claim whose answer
            // was lost and that is claimed again only moves the generation once more).
            retry_transient("claiming the lake", || {
                l.tables.claim()?;
                l.quarantine.claim()?;
                l.bronze.claim()?;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Every sink's checkpoint (each lake table its own): give them all to
    /// [`ResumePlan::from_checkpoints`], so sinks left at different epochs by a crash each get
    /// exactly the epochs they miss.
    pub fn checkpoints(&self) -> Result<Vec<Option<Checkpoint>>, SinkError> {
        let mut out = Vec::new();
        if let Some(t) = &self.table {
            out.push(t.checkpoint()?);
        }
        if let Some(w) = &self.warehouse {
            out.push(w.checkpoint()?);
        }
        if let Some(l) = &self.lake {
            out.extend(retry_transient("reading the lake's checkpoints", || {
                let mut lake = l.tables.table_checkpoints()?;
                lake.extend(l.quarantine.table_checkpoints()?);
                lake.extend(l.bronze.table_checkpoints()?);
                Ok(lake)
            })?);
        }
        Ok(out)
    }

    /// Attaches every sink to the graph's `outputs`, committing with the sources'
    /// `positions` once the data-quality gate has passed each epoch.
    pub fn attach<'s>(
        &self,
        outputs: Outputs<'s>,
        positions: StreamVec<'s, Epoch, alluvium_engine::PositionUpdate>,
        plan: &ResumePlan,
        ctx: &WorkerContext,
        probe: &ProbeHandle<Epoch>,
    ) -> Result<(), String> {
        let err = |e: SinkError| e.to_string();
        // No sink commits an epoch the data-quality gate has not passed (bronze included,
        // though none of its rows depend on the checks).
        let positions = alluvium_engine::barrier::after(positions, outputs.dq.inner.clone());
        // The silver/gold/dq changes are routed and consolidated once, for every sink that
        // takes them (each writer maps only its own tables' rows).
        let tables = (self.lake.is_some() || self.warehouse.is_some() || self.table.is_some())
            .then(|| consolidate_epochs(outputs.tables, "tables", ctx));
        if let Some(l) = &self.lake {
            if let Some(t) = &tables {
                commit_changes(t, positions.clone(), &l.tables, plan, ctx, probe).map_err(err)?;
            }
            // Append-only: written where they are, as they come.
            commit_changes(
                &appended_epochs(outputs.quarantine, "quarantine", ctx),
                positions.clone(),
                &l.quarantine,
                plan,
                ctx,
                probe,
            )
            .map_err(err)?;
            commit_changes(
                &appended_epochs(outputs.bronze, "bronze", ctx),
                positions.clone(),
                &l.bronze,
                plan,
                ctx,
                probe,
            )
            .map_err(err)?;
        }
        if let (Some(w), Some(t)) = (&self.warehouse, &tables) {
            commit_changes(t, positions.clone(), w, plan, ctx, probe).map_err(err)?;
        }
        if let (Some(f), Some(t)) = (&self.table, &tables) {
            commit_changes(t, positions, f, plan, ctx, probe).map_err(err)?;
        }
        Ok(())
    }
}
