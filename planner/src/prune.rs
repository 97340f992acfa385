//! Reading only the columns a query uses.
//!
//! A source whose rows go only through watermark nodes into projections
//! (the shape every query over a source starts with) reads just the
//! columns those use, with its event-time, primary-key and `_op` columns.
//! A connector that can leave the others undecoded (JSON by name, Parquet
//! by column) never decodes them; any other is projected right after
//! reading ([`eddy_operators::source::project`]).
//!
//! It is applied when a plan is built and explained, not stored: the
//! stored plan keeps every column, so a job's plan and checkpoints do not
//! depend on it, and jobs merged into one (a statement set) share a
//! source before it is applied.

use std::collections::BTreeSet;

use datafusion::arrow::datatypes::Schema;
use eddy_operators::updating::OP_COLUMN;

use crate::graph::{EdgeKind, NodeKind, PhysicalGraph, ReadColumns};

impl PhysicalGraph {
    /// The graph with each source reading only the columns its readers
    /// use, where that can be worked out (see the module docs).
    pub fn pruned(mut self) -> Self {
        let sources: Vec<usize> = self
            .nodes
            .iter()
            .filter(|n| matches!(&n.kind, NodeKind::Source(s) if s.read.is_none()))
            .map(|n| n.id)
            .collect();
        for id in sources {
            if let Some(pruning) = Pruning::find(&self, id) {
                pruning.apply(&mut self);
            }
        }
        self
    }
}

/// What narrowing one source changes.
struct Pruning {
    source: usize,
    /// The source and the watermark nodes after it: they emit its columns.
    emitting: Vec<usize>,
    /// The projections that read its columns.
    readers: Vec<usize>,
    /// The columns kept, ascending.
    keep: Vec<usize>,
}

impl Pruning {
    /// `None` if a node after the source is not a watermark or a
    /// projection fed forward, or if every column is used.
    fn find(graph: &PhysicalGraph, source: usize) -> Option<Self> {
        let node = graph.node(source)?;
        let NodeKind::Source(s) = &node.kind else {
            return None;
        };
        let schema = &node.schema;
        let mut used = BTreeSet::new();
        let named = s
            .event_time
            .iter()
            .chain(&s.primary_key)
            .map(String::as_str)
            .chain([OP_COLUMN]);
        used.extend(named.filter_map(|c| schema.index_of(c).ok()));
        let (mut emitting, mut readers) = (vec![source], Vec::new());
        let mut at = 0;
        while let Some(&from) = emitting.get(at) {
            at += 1;
            for edge in graph.edges.iter().filter(|e| e.from == from) {
                // A source's other port carries dead letters, not its rows.
                if edge.port != 0 && from == source {
                    continue;
                }
                if edge.port != 0 || edge.kind != EdgeKind::Forward {
                    return None;
                }
                let mut exprs = match &graph.node(edge.to)?.kind {
                    NodeKind::Watermark(w) => {
                        used.insert(schema.index_of(&w.column).ok()?);
                        emitting.push(edge.to);
                        vec![w.expr.clone()]
                    }
                    NodeKind::Project(p) => {
                        readers.push(edge.to);
                        p.exprs.iter().chain(&p.filter).cloned().collect()
                    }
                    _ => return None,
                };
                for e in &mut exprs {
                    e.visit_columns(&mut |i| {
                        used.insert(*i);
                    });
                }
            }
        }
        let keep: Vec<usize> = used.into_iter().collect();
        (!readers.is_empty() && keep.len() < schema.fields().len()).then_some(Self {
            source,
            emitting,
            readers,
            keep,
        })
    }

    fn apply(self, graph: &mut PhysicalGraph) {
        let mut renumber = |i: &mut usize| {
            *i = self.keep.binary_search(i).unwrap_or(*i);
        };
        for node in &mut graph.nodes {
            if self.emitting.contains(&node.id) {
                let declared = node.schema.clone();
                node.schema = narrow(&declared, &self.keep);
                match &mut node.kind {
                    NodeKind::Source(s) if node.id == self.source => {
                        s.read = Some(ReadColumns {
                            declared,
                            columns: self.keep.clone(),
                        });
                    }
                    NodeKind::Watermark(w) => w.expr.visit_columns(&mut renumber),
                    _ => {}
                }
            } else if self.readers.contains(&node.id)
                && let NodeKind::Project(p) = &mut node.kind
            {
                for e in p.exprs.iter_mut().chain(&mut p.filter) {
                    e.visit_columns(&mut renumber);
                }
            }
        }
    }
}

fn narrow(schema: &Schema, keep: &[usize]) -> Schema {
    let fields: Vec<_> = keep.iter().map(|&i| schema.field(i).clone()).collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}
