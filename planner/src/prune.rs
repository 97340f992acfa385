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
//!
//! The same walk finds a source's **bounds**: when its rows all go to one
//! projection with a filter, that filter's conjuncts of the form `column
//! op literal` (`=`, `<`, `<=`, `>`, `>=`) are handed to the connector,
//! which may skip input that cannot meet them (a Parquet row group whose
//! statistics exclude them). The filter still runs on every row read.

use std::collections::BTreeSet;

use datafusion::arrow::datatypes::Schema;
use eddy_operators::updating::OP_COLUMN;

use crate::expr::{BinaryOp, ScalarExpr};
use crate::graph::{EdgeKind, NodeKind, PhysicalGraph, ProjectNode, ReadColumns, SourceBound};

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
            let Some(reach) = Reach::find(&self, id) else {
                continue;
            };
            let bounds = reach.bounds(&self);
            if let Some(NodeKind::Source(s)) = self.nodes.get_mut(id).map(|n| &mut n.kind) {
                s.bounds = bounds;
            }
            if let Some(pruning) = Pruning::find(&self, reach) {
                pruning.apply(&mut self);
            }
        }
        self
    }
}

/// Where a source's rows go: through watermark nodes (`emitting`, the
/// source first) into projections (`readers`), all fed forward.
struct Reach {
    source: usize,
    emitting: Vec<usize>,
    readers: Vec<usize>,
}

impl Reach {
    /// `None` if a node after the source is not a watermark or a
    /// projection fed forward.
    fn find(graph: &PhysicalGraph, source: usize) -> Option<Self> {
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
                match &graph.node(edge.to)?.kind {
                    NodeKind::Watermark(_) => emitting.push(edge.to),
                    NodeKind::Project(_) => readers.push(edge.to),
                    _ => return None,
                }
            }
        }
        (!readers.is_empty()).then_some(Self {
            source,
            emitting,
            readers,
        })
    }

    /// The `column op literal` conjuncts of the one reader's filter.
    fn bounds(&self, graph: &PhysicalGraph) -> Vec<SourceBound> {
        let [reader] = self.readers.as_slice() else {
            return Vec::new();
        };
        let (Some(source), Some(reader)) = (graph.node(self.source), graph.node(*reader)) else {
            return Vec::new();
        };
        let NodeKind::Project(ProjectNode {
            filter: Some(filter),
            ..
        }) = &reader.kind
        else {
            return Vec::new();
        };
        let mut conjuncts = Vec::new();
        conjuncts_of(filter, &mut conjuncts);
        conjuncts
            .into_iter()
            .filter_map(|c| bound(c, &source.schema))
            .collect()
    }
}

/// The operands of `e`'s top-level ANDs.
fn conjuncts_of<'a>(e: &'a ScalarExpr, out: &mut Vec<&'a ScalarExpr>) {
    match e {
        ScalarExpr::Binary {
            op: BinaryOp::And,
            left,
            right,
        } => {
            conjuncts_of(left, out);
            conjuncts_of(right, out);
        }
        other => out.push(other),
    }
}

/// `column op literal` (or `literal op column`) as a bound on the column.
fn bound(e: &ScalarExpr, schema: &Schema) -> Option<SourceBound> {
    let ScalarExpr::Binary { op, left, right } = e else {
        return None;
    };
    let (op, column, value) = match (left.as_ref(), right.as_ref()) {
        (ScalarExpr::Column { index, .. }, literal) => (*op, *index, literal),
        (literal, ScalarExpr::Column { index, .. }) => (op.swapped()?, *index, literal),
        _ => return None,
    };
    let is_literal = matches!(value, ScalarExpr::Literal { value: Some(_), .. });
    (is_literal && op.swapped().is_some()).then(|| SourceBound {
        column: schema.field(column).name().clone(),
        op,
        value: value.clone(),
    })
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
    /// `None` if every column is used.
    fn find(graph: &PhysicalGraph, reach: Reach) -> Option<Self> {
        let node = graph.node(reach.source)?;
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
        let mut exprs = Vec::new();
        for id in reach.emitting.iter().chain(&reach.readers) {
            match &graph.node(*id)?.kind {
                NodeKind::Watermark(w) => {
                    used.insert(schema.index_of(&w.column).ok()?);
                    exprs.push(w.expr.clone());
                }
                NodeKind::Project(p) => exprs.extend(p.exprs.iter().chain(&p.filter).cloned()),
                _ => {}
            }
        }
        for e in &mut exprs {
            e.visit_columns(&mut |i| {
                used.insert(*i);
            });
        }
        let keep: Vec<usize> = used.into_iter().collect();
        (keep.len() < schema.fields().len()).then_some(Self {
            source: reach.source,
            emitting: reach.emitting,
            readers: reach.readers,
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
