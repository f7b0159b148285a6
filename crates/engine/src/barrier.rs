//! Barriers: making a stream's progress wait for another stream's.
//!
//! A sink commits an epoch once its inputs — the staged rows and the source positions — have
//! passed it. Some decisions about an epoch are made elsewhere in the graph (a data-quality
//! gate that may refuse the epoch), and every sink must wait for them even when none of its
//! rows depend on them (bronze does not depend on the gold checks). [`after`] gives a stream
//! the frontier of another one without any of its data: concatenated with an empty stream
//! whose frontier follows `other`, `stream` passes an epoch only once both have.

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Concat;
use timely::dataflow::StreamVec;

use crate::epoch::Epoch;

/// `stream`, whose frontier also waits for `other`'s.
pub fn after<'s, D, E>(
    stream: StreamVec<'s, Epoch, D>,
    other: StreamVec<'s, Epoch, E>,
) -> StreamVec<'s, Epoch, D>
where
    D: Clone + 'static,
    E: Clone + 'static,
{
    // Holds no capability and sends nothing: its output frontier is its input's.
    let progress_only: StreamVec<'s, Epoch, D> = other
        .unary::<CapacityContainerBuilder<Vec<D>>, _, _, _>(Pipeline, "Barrier", |_cap, _info| {
            |input, _output| input.for_each(|_, _| {})
        });
    stream.concat(progress_only)
}
