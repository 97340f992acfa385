//! The physical dataflow graph: plain, serialisable data that EXPLAIN
//! prints and [`crate::build`] turns into running operators.
//!
//! Nodes are listed in topological order; edges say how rows move:
//! `Forward` (same subtask, fused into one thread when parallelism
//! matches), `Shuffle { keys }` (hash partitioned by those output columns)
//! or `Gather` (everything to a single subtask).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use datafusion::arrow::datatypes::{DataType, Schema};
use serde::{Deserialize, Serialize};

pub use eddy_operators::join::{Expiry, JoinType};
pub use eddy_operators::over::{OverFrame, OverMode, OverSpec};
pub use eddy_operators::rank::{RankFunction, RankMode, RankSpec};
pub use eddy_operators::ranking::keep_last::KeepLastSpec;
pub use eddy_operators::temporal::TemporalSide;

use crate::expr::{BinaryOp, ScalarExpr};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PhysicalGraph {
    pub nodes: Vec<PlanNode>,
    pub edges: Vec<PlanEdge>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanNode {
    pub id: usize,
    pub parallelism: usize,
    pub kind: NodeKind,
    /// The schema of the rows this node emits.
    pub schema: Schema,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum NodeKind {
    Source(SourceNode),
    Watermark(WatermarkNode),
    Project(ProjectNode),
    WindowAggregate(WindowAggregateNode),
    UpdatingAggregate(UpdatingAggregateNode),
    Join(JoinNode),
    /// A join with a table read whole (`FOR SYSTEM_TIME AS OF` processing
    /// time; see [`eddy_operators::lookup`]).
    LookupJoin(LookupJoinNode),
    /// A join of its input 0 with the versions of input 1 valid at each
    /// row's event time (see [`eddy_operators::temporal`]).
    TemporalJoin(TemporalJoinNode),
    /// Top-N and deduplication (see [`eddy_operators::rank`]).
    Rank(RankSpec),
    /// Each key's last row, as a retracting changelog: an upsert source's
    /// normalization (see [`eddy_operators::ranking::keep_last`]).
    KeepLast(KeepLastSpec),
    OverAggregate(OverAggregateNode),
    /// `UNION ALL`: the rows of every input (input 0, 1, ...), already
    /// cast to this node's schema.
    Union,
    Sink(SinkNode),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceNode {
    pub name: String,
    pub options: BTreeMap<String, String>,
    /// The event-time column, or `None` for processing time.
    pub event_time: Option<String>,
    /// `PRIMARY KEY (...)`'s columns, for the connector (upsert-kafka's key).
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// Set when the job reads only some of the table's columns: the node's
    /// schema is then theirs (see [`crate::prune`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<ReadColumns>,
    /// Comparisons every row the job keeps meets: the connector may skip
    /// input that cannot meet them (see [`crate::prune`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bounds: Vec<SourceBound>,
}

/// `column op value`: a conjunct of the filter a source's rows go through
/// before anything else, with a literal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceBound {
    /// A column of the table, by name.
    pub column: String,
    /// `=`, `<`, `<=`, `>` or `>=`.
    pub op: BinaryOp,
    /// A literal, not NULL.
    pub value: ScalarExpr,
}

/// The columns a source reads of its table's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadColumns {
    /// The table's columns, as declared (what the connector decodes from).
    pub declared: Schema,
    /// The indices of the columns read, in `declared`, ascending.
    pub columns: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatermarkNode {
    pub column: String,
    /// `WATERMARK FOR column AS expr`, over the source's columns.
    pub expr: ScalarExpr,
    /// The source's `'watermark.idle-timeout'`: a partition without rows
    /// for this long stops holding the watermark back.
    #[serde(default)]
    pub idle_timeout_ms: Option<i64>,
    /// The column holds `PROCTIME()`: the watermark also follows the wall
    /// clock, so processing-time windows close when their end passes
    /// whether or not rows arrive.
    #[serde(default)]
    pub processing_time: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectNode {
    pub filter: Option<ScalarExpr>,
    /// One expression per output column (named by the node's schema).
    pub exprs: Vec<ScalarExpr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowSpec {
    Tumble { size_ms: i64 },
    Hop { slide_ms: i64, size_ms: i64 },
    Cumulate { step_ms: i64, size_ms: i64 },
    Session { gap_ms: i64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowAggregateNode {
    pub window: WindowSpec,
    /// Input columns that form the group key.
    pub keys: Vec<usize>,
    /// The input column holding event time.
    pub time_column: usize,
    pub aggregates: Vec<AggregateCall>,
    /// How long (ms) a fired window still takes late rows, emitting
    /// corrections; 0 = none. Above 0 the output is a changelog.
    #[serde(default)]
    pub allowed_lateness_ms: i64,
    /// Where late rows go besides being counted: the dead-letter side
    /// output (edges with `port` 1), carrying these input columns.
    #[serde(default)]
    pub late_output: Option<LateOutputSpec>,
    /// Emit running results of open windows this often (processing time,
    /// ms); the output is then a changelog.
    #[serde(default)]
    pub early_fire_ms: Option<i64>,
    /// In-memory state (bytes) per subtask before open windows spill to
    /// the state backend (`'state.cache.size'`); `None`: the default.
    #[serde(default)]
    pub cache_bytes: Option<u64>,
}

/// The columns of a window's late rows sent to the dead-letter sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LateOutputSpec {
    /// Input columns of the window node...
    pub columns: Vec<usize>,
    /// ...and their names in the dead-letter rows (the source's).
    pub names: Vec<String>,
}

/// `GROUP BY` without a window: output is a changelog (`_op` last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdatingAggregateNode {
    pub keys: Vec<usize>,
    pub aggregates: Vec<AggregateCall>,
    /// The input's changelog column, when the input is updating.
    #[serde(default)]
    pub op_column: Option<usize>,
    /// Groups not updated for this long (ms of processing or event time) are dropped
    /// (`'table.exec.state.ttl'`); `None`: kept for ever.
    #[serde(default)]
    pub state_ttl_ms: Option<i64>,
    /// The time-to-live is event time: measured on the watermark
    /// (`'table.exec.state.ttl.time-domain' = 'event-time'`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub state_ttl_event_time: bool,
}

/// A regular join of its input 0 (left) and input 1 (right). Its rows are
/// the left input's row columns, then the right's, then `_op` if
/// [`JoinNode::emits_changelog`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinNode {
    pub join_type: JoinType,
    /// Pairwise equal key columns of the left input and of the right (the
    /// edges shuffle by them); empty: every row meets every row, at
    /// parallelism 1.
    pub left_keys: Vec<usize>,
    pub right_keys: Vec<usize>,
    /// Each input's changelog column (its last), when it is updating.
    pub left_op: Option<usize>,
    pub right_op: Option<usize>,
    /// The rest of the condition, over left row columns ++ right row columns.
    pub residual: Option<ScalarExpr>,
    /// When a left row can no longer match (an interval or window join):
    /// once the watermark passes its time column (of the left input) plus
    /// `after_ms`. `None`: kept for ever.
    #[serde(default)]
    pub left_expiry: Option<Expiry>,
    #[serde(default)]
    pub right_expiry: Option<Expiry>,
    /// The output watermark lags the input's by this much (ms): an
    /// interval join's output keeps its left input's time attribute.
    #[serde(default)]
    pub watermark_delay_ms: i64,
    /// A join key's rows on a side whose rows do not expire are dropped
    /// once not written for this long (ms of processing or event time;
    /// `'table.exec.state.ttl'`). `None`: kept for ever.
    #[serde(default)]
    pub state_ttl_ms: Option<i64>,
    /// The time-to-live is event time: measured on the watermark
    /// (`'table.exec.state.ttl.time-domain' = 'event-time'`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub state_ttl_event_time: bool,
}

/// A lookup join: one input; its output is the input's row columns, then
/// the table's (renamed apart, nullable), then `_op` if the input has it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookupJoinNode {
    pub join_type: eddy_operators::lookup::LookupJoinType,
    /// The table's source, as declared.
    pub table: SourceNode,
    /// The columns the table's source reads.
    pub table_schema: Schema,
    /// Over the input, one per table key, of the same types.
    pub probe_keys: Vec<ScalarExpr>,
    pub table_keys: Vec<usize>,
    /// The rest of the condition, over input row columns ++ table columns.
    pub residual: Option<ScalarExpr>,
    /// The input's changelog column (its last), carried to each output row.
    pub op_column: Option<usize>,
}

/// An event-time temporal join: input 0's rows (probe), each with the
/// version of its key in input 1 valid at its time. Its rows are input 0's
/// columns, then input 1's (nullable); append-only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemporalJoinNode {
    pub join_type: eddy_operators::lookup::LookupJoinType,
    pub probe: TemporalSide,
    /// Its keys are the versioned table's primary key.
    pub versions: TemporalSide,
    /// The rest of the condition, over probe columns ++ version columns.
    pub residual: Option<ScalarExpr>,
}

impl JoinNode {
    /// See [`eddy_operators::join::emits_changelog`].
    pub fn emits_changelog(&self) -> bool {
        eddy_operators::join::emits_changelog(
            self.join_type,
            [self.left_op.is_some(), self.right_op.is_some()],
            [self.left_expiry.is_some(), self.right_expiry.is_some()],
        )
    }
}

/// `agg(...) OVER (...)`: the input's rows, each with its aggregates (see
/// [`eddy_operators::over`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverAggregateNode {
    pub spec: OverSpec,
    /// Over the node's input; no FILTER.
    pub aggregates: Vec<AggregateCall>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AggregateCall {
    pub function: String,
    /// Arguments over the node's input.
    pub args: Vec<ScalarExpr>,
    /// `FILTER (WHERE ...)`: a boolean over the node's input.
    #[serde(default)]
    pub filter: Option<ScalarExpr>,
    pub distinct: bool,
    pub output_name: String,
    pub output_type: DataType,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkNode {
    pub name: String,
    /// The connector's options (`connector` among them), as validated.
    pub options: BTreeMap<String, String>,
    /// What the connector promises with these options.
    pub guarantee: eddy_operators::DeliveryGuarantee,
    /// A table-mode SELECT (`'sql-client.execution.result-mode' =
    /// 'table'`): the sink gets the table the changelog leaves, at the end.
    #[serde(default)]
    pub result_table: bool,
    /// `PRIMARY KEY (...)`'s columns, for the connector (upsert-kafka's key).
    #[serde(default)]
    pub primary_key: Vec<String>,
}

impl SinkNode {
    /// A sink node for a catalog sink.
    pub fn of(def: &crate::catalog::SinkDef) -> Self {
        Self {
            name: def.name.clone(),
            options: def.options.clone(),
            guarantee: def.guarantee,
            result_table: false,
            primary_key: def.primary_key.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEdge {
    pub from: usize,
    pub to: usize,
    pub kind: EdgeKind,
    /// Which output of `from`: 0 = its rows, 1 = its late rows.
    #[serde(default)]
    pub port: usize,
    /// Which input of `to`: 0, or 1 for a join's right side.
    #[serde(default)]
    pub input: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EdgeKind {
    Forward,
    Shuffle { keys: Vec<usize> },
    Gather,
}

impl PhysicalGraph {
    /// One graph running every graph of `graphs` (a statement set's
    /// INSERTs), where each node that computes the same thing from the same
    /// inputs as one already there is that one: a source read by several
    /// INSERTs is read once, and so is the view over it that they share.
    /// Sinks are not shared (two INSERTs into one table both write), but
    /// for those of a shared node's side output: the dead letters of a
    /// source read once are written once.
    pub fn merge(graphs: impl IntoIterator<Item = PhysicalGraph>) -> PhysicalGraph {
        let mut out = PhysicalGraph::default();
        for g in graphs {
            // Node ids of `g` to ids of `out`; nodes come in topological order.
            let mut ids = vec![usize::MAX; g.nodes.len()];
            for node in g.nodes.iter().cloned() {
                let inputs: Vec<PlanEdge> = g
                    .input_edges(node.id)
                    .into_iter()
                    .map(|e| PlanEdge {
                        from: ids[e.from],
                        ..e.clone()
                    })
                    .collect();
                let side_output = inputs.first().is_some_and(|e| e.port != 0);
                let same = out.nodes.iter().find(|n| {
                    (side_output || !matches!(n.kind, NodeKind::Sink(_)))
                        && n.kind == node.kind
                        && n.parallelism == node.parallelism
                        && n.schema == node.schema
                        && out
                            .input_edges(n.id)
                            .into_iter()
                            .map(|e| (e.from, &e.kind, e.port, e.input))
                            .eq(inputs.iter().map(|e| (e.from, &e.kind, e.port, e.input)))
                });
                if let Some(n) = same {
                    ids[node.id] = n.id;
                    continue;
                }
                let id = out.nodes.len();
                ids[node.id] = id;
                out.edges
                    .extend(inputs.into_iter().map(|e| PlanEdge { to: id, ..e }));
                out.nodes.push(PlanNode { id, ..node });
            }
        }
        out
    }

    pub fn node(&self, id: usize) -> Option<&PlanNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The edge that feeds `id` (its first input), if any.
    pub fn input_edge(&self, id: usize) -> Option<&PlanEdge> {
        self.edges.iter().find(|e| e.to == id && e.input == 0)
    }

    /// Every edge that feeds `id`, by input.
    pub fn input_edges(&self, id: usize) -> Vec<&PlanEdge> {
        let mut edges: Vec<&PlanEdge> = self.edges.iter().filter(|e| e.to == id).collect();
        edges.sort_by_key(|e| e.input);
        edges
    }

    /// What node `id` does, as EXPLAIN says it (`Window aggregate ...`).
    pub fn describe_node(&self, id: usize) -> Option<String> {
        self.node(id).map(|n| describe(self, &n.kind, n))
    }

    /// The stage name of source node `id`: `source:<table>`, with `#2`,
    /// `#3`... for the second and later reads of one table. Its position
    /// in checkpoints is kept under it, and its reader's metrics are
    /// labelled `<stage>-source`.
    pub fn source_stage(&self, id: usize) -> Option<String> {
        let NodeKind::Source(s) = &self.node(id)?.kind else {
            return None;
        };
        let reads = self
            .nodes
            .iter()
            .take_while(|n| n.id != id)
            .filter(|n| matches!(&n.kind, NodeKind::Source(o) if o.name == s.name))
            .count();
        Some(match reads {
            0 => format!("source:{}", s.name),
            k => format!("source:{}#{}", s.name, k + 1),
        })
    }

    /// The name of a node's kind (`WindowAggregate`); its operators'
    /// metrics are labelled `node<id> <operator name>`.
    pub fn kind_name(kind: &NodeKind) -> &'static str {
        match kind {
            NodeKind::Source(_) => "Source",
            NodeKind::Watermark(_) => "Watermark",
            NodeKind::Project(_) => "Project",
            NodeKind::WindowAggregate(_) => "WindowAggregate",
            NodeKind::UpdatingAggregate(_) => "UpdatingAggregate",
            NodeKind::Join(_) => "Join",
            NodeKind::LookupJoin(_) => "LookupJoin",
            NodeKind::TemporalJoin(_) => "TemporalJoin",
            NodeKind::Rank(_) => "Rank",
            NodeKind::KeepLast(_) => "KeepLast",
            NodeKind::OverAggregate(_) => "OverAggregate",
            NodeKind::Union => "Union",
            NodeKind::Sink(_) => "Sink",
        }
    }

    /// A readable rendering for EXPLAIN: one node per line (top = source),
    /// with its parallelism, details and output columns, and the edges.
    /// Sources read only the columns the query uses ([`crate::prune`]).
    pub fn explain(&self) -> String {
        let mut out = self.clone().pruned().explain_as_is();
        let uses = self.processing_time_uses();
        if !uses.is_empty() {
            let _ = writeln!(
                out,
                "note: a replay of this query will not give live's answer: {}",
                uses.join("; ")
            );
        }
        out
    }

    /// The first node whose state expires by event time although no
    /// watermark reaches it on one of its inputs (so it would keep its
    /// state for ever), named for a message.
    pub fn event_time_ttl_without_watermark(&self) -> Option<&'static str> {
        let mut watermarked = vec![false; self.nodes.len()];
        // Nodes are added after their inputs: their ids are in order.
        for node in &self.nodes {
            let mut inputs = self.edges.iter().filter(|e| e.to == node.id).peekable();
            watermarked[node.id] = match node.kind {
                NodeKind::Watermark(_) => true,
                _ => {
                    inputs.peek().is_some()
                        && inputs.all(|e| watermarked.get(e.from) == Some(&true))
                }
            };
            if let (Some((_, true)), false) = (state_ttl(&node.kind), watermarked[node.id]) {
                return Some(match node.kind {
                    NodeKind::Join(_) => "join",
                    NodeKind::Rank(_) => "Top-N",
                    NodeKind::KeepLast(_) => "deduplication",
                    NodeKind::OverAggregate(_) => "OVER aggregate",
                    _ => "GROUP BY",
                });
            }
        }
        None
    }

    /// What in the query depends on the wall clock rather than on event
    /// time, so that a replay at another speed gives another answer.
    pub fn processing_time_uses(&self) -> Vec<String> {
        let mut uses = Vec::new();
        for node in &self.nodes {
            let use_of = match &node.kind {
                NodeKind::Watermark(w) if w.processing_time => {
                    format!("its time column {} is PROCTIME(), the wall clock", w.column)
                }
                NodeKind::LookupJoin(l) => format!(
                    "the lookup join reads {} as it is when each row arrives",
                    l.table.name
                ),
                kind => match state_ttl(kind) {
                    Some((ms, false)) => format!(
                        "its state expires after {} idle by the wall clock (table.exec.state.ttl; 'table.exec.state.ttl.time-domain' = 'event-time' measures it on the watermark)",
                        format_duration(ms)
                    ),
                    _ => continue,
                },
            };
            if !uses.contains(&use_of) {
                uses.push(use_of);
            }
        }
        uses
    }

    fn explain_as_is(&self) -> String {
        let mut out = String::from("Dataflow\n");
        for node in &self.nodes {
            let edges = self.input_edges(node.id);
            for edge in &edges {
                let mut how = match &edge.kind {
                    EdgeKind::Forward => "forward".to_string(),
                    EdgeKind::Gather => "gather".to_string(),
                    EdgeKind::Shuffle { keys } => {
                        let from = self.node(edge.from);
                        let names: Vec<String> = keys
                            .iter()
                            .map(|&k| {
                                from.map_or(format!("#{k}"), |n| n.schema.field(k).name().clone())
                            })
                            .collect();
                        format!("shuffle by hash({})", names.join(", "))
                    }
                };
                if edge.port != 0 {
                    how = format!("late rows of [{}], {how}", edge.from);
                } else if edges.len() > 1 {
                    let side = if edge.input == 0 { "left" } else { "right" };
                    how = format!("{side} input [{}], {how}", edge.from);
                }
                let _ = writeln!(out, "  │ {how}");
            }
            let _ = writeln!(
                out,
                "  [{}] {}  (parallelism {})",
                node.id,
                describe(self, &node.kind, node),
                node.parallelism
            );
            let cols: Vec<String> = node
                .schema
                .fields()
                .iter()
                .map(|f| format!("{}: {}", f.name(), f.data_type()))
                .collect();
            let _ = writeln!(out, "      → {}", cols.join(", "));
        }
        out
    }
}

/// `function(args) [FILTER (WHERE ...)] AS name`.
fn describe_call(a: &AggregateCall) -> String {
    let args: Vec<String> = a.args.iter().map(ToString::to_string).collect();
    let d = if a.distinct { "DISTINCT " } else { "" };
    let filter = a
        .filter
        .as_ref()
        .map_or(String::new(), |f| format!(" FILTER (WHERE {f})"));
    format!(
        "{}({d}{}){filter} AS {}",
        a.function,
        args.join(", "),
        a.output_name
    )
}

/// The name of column `k` of `node`'s input `input` (`#k` if unknown).
fn input_column(graph: &PhysicalGraph, node: &PlanNode, input: usize, k: usize) -> String {
    graph
        .input_edges(node.id)
        .iter()
        .find(|e| e.input == input)
        .and_then(|e| graph.node(e.from))
        .map_or(format!("#{k}"), |n| n.schema.field(k).name().clone())
}

fn describe(graph: &PhysicalGraph, kind: &NodeKind, node: &PlanNode) -> String {
    match kind {
        NodeKind::Source(s) => describe_source(s),
        NodeKind::Watermark(w) => describe_watermark(w),
        NodeKind::Project(p) => describe_project(node, p),
        NodeKind::WindowAggregate(w) => describe_window_aggregate(w),
        NodeKind::UpdatingAggregate(u) => describe_updating_aggregate(u),
        NodeKind::Join(j) => describe_join(graph, node, j),
        NodeKind::LookupJoin(l) => describe_lookup_join(node, l),
        NodeKind::TemporalJoin(t) => describe_temporal_join(graph, node, t),
        NodeKind::Rank(r) => describe_rank(graph, node, r),
        NodeKind::KeepLast(k) => describe_keep_last(graph, node, k),
        NodeKind::OverAggregate(o) => describe_over_aggregate(graph, node, o),
        NodeKind::Union => format!("Union of {} inputs", graph.input_edges(node.id).len()),
        NodeKind::Sink(s) => describe_sink(s),
    }
}

fn describe_source(s: &SourceNode) -> String {
    let opts: Vec<String> = s.options.iter().map(|(k, v)| option_text(k, v)).collect();
    let time = match &s.event_time {
        Some(c) => format!("event time: {c}"),
        None => "processing time (no WATERMARK declared)".to_string(),
    };
    let read = s.read.as_ref().map_or(String::new(), |r| {
        format!(
            ", reads {} of its {} columns",
            r.columns.len(),
            r.declared.fields().len()
        )
    });
    let bounds: Vec<String> = s
        .bounds
        .iter()
        .map(|b| format!("{} {} {}", b.column, b.op.symbol(), b.value))
        .collect();
    let bounds = if bounds.is_empty() {
        String::new()
    } else {
        format!(", filter pushed to the connector: {}", bounds.join(" AND "))
    };
    format!(
        "Source {} [{}] {time}{read}{bounds}",
        s.name,
        opts.join(", ")
    )
}

fn describe_watermark(w: &WatermarkNode) -> String {
    if w.processing_time {
        return format!(
            "Watermark for {}: processing time (the wall clock, also without rows)",
            w.column
        );
    }
    let idle = w.idle_timeout_ms.map_or(String::new(), |ms| {
        format!(", idle splits after {}", format_duration(ms))
    });
    format!(
        "Watermark for {}: min over splits of max({}){idle}",
        w.column, w.expr
    )
}

fn describe_project(node: &PlanNode, p: &ProjectNode) -> String {
    let exprs: Vec<String> = p
        .exprs
        .iter()
        .zip(node.schema.fields())
        .map(|(e, f)| {
            let e = e.to_string();
            if &e == f.name() {
                e
            } else {
                format!("{e} AS {}", f.name())
            }
        })
        .collect();
    match &p.filter {
        Some(f) => format!("Filter {f} → Project {}", exprs.join(", ")),
        None => format!("Project {}", exprs.join(", ")),
    }
}

fn describe_window_aggregate(w: &WindowAggregateNode) -> String {
    let window = match w.window {
        WindowSpec::Tumble { size_ms } => {
            format!("TumblingWindowAggregate size={}", format_duration(size_ms))
        }
        WindowSpec::Hop { slide_ms, size_ms } => format!(
            "HoppingWindowAggregate slide={} size={}",
            format_duration(slide_ms),
            format_duration(size_ms)
        ),
        WindowSpec::Session { gap_ms } => {
            format!("SessionWindowAggregate gap={}", format_duration(gap_ms))
        }
        WindowSpec::Cumulate { step_ms, size_ms } => format!(
            "CumulatingWindowAggregate step={} size={}",
            format_duration(step_ms),
            format_duration(size_ms)
        ),
    };
    let aggs: Vec<String> = w.aggregates.iter().map(describe_call).collect();
    let lateness = if w.allowed_lateness_ms > 0 {
        format!(
            " allowed-lateness={} → changelog (_op)",
            format_duration(w.allowed_lateness_ms)
        )
    } else {
        String::new()
    };
    let early = w.early_fire_ms.map_or(String::new(), |ms| {
        format!(
            " early-fire every {} → changelog (_op)",
            format_duration(ms)
        )
    });
    let lateness = format!("{lateness}{early}");
    let late = if w.late_output.is_some() {
        "; late rows → dead-letter"
    } else {
        "; late rows dropped"
    };
    let kept = match w.allowed_lateness_ms {
        0 => "until the watermark passes its end".to_string(),
        ms => format!(
            "until the watermark passes its end + {}",
            format_duration(ms)
        ),
    };
    format!(
        "{window} keys=[{}] aggregates=[{}]{lateness}{late}; state: each open window {kept}",
        w.keys
            .iter()
            .map(|k| format!("#{k}"))
            .collect::<Vec<_>>()
            .join(", "),
        aggs.join(", ")
    )
}

fn describe_updating_aggregate(u: &UpdatingAggregateNode) -> String {
    let aggs: Vec<String> = u.aggregates.iter().map(|a| a.output_name.clone()).collect();
    let input = if u.op_column.is_some() {
        " over a changelog (retracts -U/-D)"
    } else {
        ""
    };
    format!(
        "UpdatingAggregate keys=[{}] aggregates=[{}]{input} → changelog (_op); state: a group per key, {}",
        u.keys
            .iter()
            .map(|k| format!("#{k}"))
            .collect::<Vec<_>>()
            .join(", "),
        aggs.join(", "),
        retention(u.state_ttl_ms, u.state_ttl_event_time)
    )
}

fn describe_join(graph: &PhysicalGraph, node: &PlanNode, j: &JoinNode) -> String {
    let name = |input: usize, k: usize| input_column(graph, node, input, k);
    let mut on: Vec<String> = j
        .left_keys
        .iter()
        .zip(&j.right_keys)
        .map(|(&l, &r)| format!("{} = {}", name(0, l), name(1, r)))
        .collect();
    if let Some(r) = &j.residual {
        on.push(r.to_string());
    }
    let on = if on.is_empty() {
        "TRUE".to_string()
    } else {
        on.join(" AND ")
    };
    let input = match (j.left_op.is_some(), j.right_op.is_some()) {
        (false, false) => "",
        (true, false) => " over an updating left input",
        (false, true) => " over an updating right input",
        (true, true) => " over updating inputs",
    };
    let out = if j.emits_changelog() {
        " → changelog (_op)"
    } else {
        " → append-only"
    };
    let retention = |input: usize, e: &Option<Expiry>| match e {
        Some(e) => format!(
            "until the watermark passes {} + {}",
            name(input, e.time_column),
            format_duration(e.after_ms)
        ),
        None => retention(j.state_ttl_ms, j.state_ttl_event_time),
    };
    let kind = match (&j.left_expiry, &j.right_expiry) {
        (Some(l), Some(_)) if j.left_keys.contains(&l.time_column) => "WindowJoin",
        (Some(_), Some(_)) => "IntervalJoin",
        _ => "Join",
    };
    let time = match (&j.left_expiry, j.watermark_delay_ms) {
        (Some(e), delay) if delay > 0 => format!(
            "; keeps the time attribute {}, its watermark {} behind",
            name(0, e.time_column),
            format_duration(delay)
        ),
        _ => String::new(),
    };
    format!(
        "{kind} {} ON {on}{input}{out}; state: left rows {}, right rows {}{time}",
        j.join_type.as_sql(),
        retention(0, &j.left_expiry),
        retention(1, &j.right_expiry),
    )
}

fn describe_lookup_join(node: &PlanNode, l: &LookupJoinNode) -> String {
    let table_key = |k: usize| {
        let offset = node.schema.fields().len()
            - l.table_schema.fields().len()
            - usize::from(l.op_column.is_some());
        node.schema.field(offset + k).name().clone()
    };
    let mut on: Vec<String> = l
        .probe_keys
        .iter()
        .zip(&l.table_keys)
        .map(|(p, &t)| format!("{p} = {}", table_key(t)))
        .collect();
    if let Some(r) = &l.residual {
        on.push(r.to_string());
    }
    let join = match l.join_type {
        eddy_operators::lookup::LookupJoinType::Inner => "INNER",
        eddy_operators::lookup::LookupJoinType::Left => "LEFT",
    };
    let out = if l.op_column.is_some() {
        "changelog (_op) in, changelog out"
    } else {
        "append-only"
    };
    format!(
        "LookupJoin {join} {} ON {} → {out}; state: none (the table is read whole at start, and again when its files change)",
        l.table.name,
        on.join(" AND ")
    )
}

fn describe_temporal_join(graph: &PhysicalGraph, node: &PlanNode, t: &TemporalJoinNode) -> String {
    let name = |input: usize, k: usize| input_column(graph, node, input, k);
    let mut on: Vec<String> = t
        .probe
        .keys
        .iter()
        .zip(&t.versions.keys)
        .map(|(&p, &v)| format!("{} = {}", name(0, p), name(1, v)))
        .collect();
    if let Some(r) = &t.residual {
        on.push(r.to_string());
    }
    let join = match t.join_type {
        eddy_operators::lookup::LookupJoinType::Inner => "INNER",
        eddy_operators::lookup::LookupJoinType::Left => "LEFT",
    };
    format!(
        "TemporalJoin {join} ON {} AS OF {} → append-only, once the watermark passes {}; state: left rows until the watermark passes {}, per key the versions from the one valid at the watermark on",
        on.join(" AND "),
        name(0, t.probe.time),
        name(0, t.probe.time),
        name(0, t.probe.time),
    )
}

fn describe_rank(graph: &PhysicalGraph, node: &PlanNode, r: &RankSpec) -> String {
    let name = |k: usize| input_column(graph, node, 0, k);
    let partition: Vec<String> = r.partition.iter().map(|&k| name(k)).collect();
    let order: Vec<String> = r
        .order
        .iter()
        .map(|&(k, desc)| format!("{} {}", name(k), if desc { "DESC" } else { "ASC" }))
        .collect();
    let rank = match &r.rank_column {
        Some(c) => format!(", emits {c}"),
        None => String::new(),
    };
    let over = format!(
        "{}() OVER (PARTITION BY {} ORDER BY {}) <= {}{rank}",
        r.function.as_sql(),
        if partition.is_empty() {
            "()".to_string()
        } else {
            partition.join(", ")
        },
        order.join(", "),
        r.limit,
    );
    let kept = if r.op_column.is_some() {
        "every row of each partition (an updating input)".to_string()
    } else {
        format!("the top {} rows of each partition", r.limit)
    };
    match r.mode {
        RankMode::Updating => format!(
            "TopN {over} → changelog (_op); state: {kept}, {}",
            retention(r.state_ttl_ms, r.state_ttl_event_time)
        ),
        RankMode::WindowClose { window_end } => format!(
            "WindowTopN {over} → append-only, when each window closes; state: {kept} until the watermark passes {}",
            name(window_end)
        ),
        RankMode::FirstSeen => format!(
            "FirstSeen {over} → append-only, each partition's first rows as they arrive (processing time), later ones dropped; state: a count per partition, {}",
            retention(r.state_ttl_ms, r.state_ttl_event_time)
        ),
        RankMode::FirstByTime { time } => format!(
            "FirstRows {over} → append-only, once the watermark passes {}; state: a count per partition {}, rows until the watermark passes {}",
            name(time),
            retention(r.state_ttl_ms, r.state_ttl_event_time),
            name(time)
        ),
    }
}

fn describe_keep_last(graph: &PhysicalGraph, node: &PlanNode, k: &KeepLastSpec) -> String {
    let keys: Vec<String> = k
        .keys
        .iter()
        .map(|&c| input_column(graph, node, 0, c))
        .collect();
    format!(
        "ChangelogNormalize by ({}): upserts and deletes by key → changelog (_op); state: each key's last row, {}",
        keys.join(", "),
        retention(k.state_ttl_ms, k.state_ttl_event_time)
    )
}

fn describe_over_aggregate(
    graph: &PhysicalGraph,
    node: &PlanNode,
    o: &OverAggregateNode,
) -> String {
    let name = |k: usize| input_column(graph, node, 0, k);
    let aggs: Vec<String> = o.aggregates.iter().map(describe_call).collect();
    let partition: Vec<String> = o.spec.partition.iter().map(|&k| name(k)).collect();
    let (order, desc) = o.spec.order;
    let frame = match o.spec.frame {
        OverFrame::Rows(n) => format!("ROWS BETWEEN {n} PRECEDING AND CURRENT ROW"),
        OverFrame::RangeMs(d) => format!(
            "RANGE BETWEEN {} PRECEDING AND CURRENT ROW",
            format_duration(d)
        ),
        OverFrame::Unbounded { rows } => format!(
            "{} BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
            if rows { "ROWS" } else { "RANGE" }
        ),
    };
    let over = format!(
        "{} OVER (PARTITION BY {} ORDER BY {} {} {frame})",
        aggs.join(", "),
        if partition.is_empty() {
            "()".to_string()
        } else {
            partition.join(", ")
        },
        name(order),
        if desc { "DESC" } else { "ASC" },
    );
    match (o.spec.mode, o.spec.frame) {
        (OverMode::EventTime, frame) => {
            let kept = match frame {
                OverFrame::Rows(n) => format!(
                    "the last {n} rows of each partition, {}",
                    retention(o.spec.state_ttl_ms, o.spec.state_ttl_event_time)
                ),
                OverFrame::RangeMs(d) => {
                    format!("the rows within {} of the watermark", format_duration(d))
                }
                OverFrame::Unbounded { .. } => format!(
                    "one running accumulator per aggregate and partition, and the rows not yet final, {}",
                    retention(o.spec.state_ttl_ms, o.spec.state_ttl_event_time)
                ),
            };
            format!(
                "OverAggregate {over} → append-only, once the watermark passes {}; state: {kept}",
                name(order)
            )
        }
        (OverMode::Updating, _) => format!(
            "OverAggregate {over} → changelog (_op), kept equal to the query over the current rows; state: every row, {}",
            retention(o.spec.state_ttl_ms, o.spec.state_ttl_event_time)
        ),
    }
}

/// `key='value'` for EXPLAIN, with secrets hidden: the value of a
/// password or secret option, and a URL's password (`user:***@host`).
fn option_text(key: &str, value: &str) -> String {
    let key_lower = key.to_ascii_lowercase();
    if key_lower.contains("password") || key_lower.contains("secret") {
        return format!("{key}='***'");
    }
    let shown = match value.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((user_info, host)) if user_info.contains(':') && !user_info.contains('/') => {
                let user = user_info.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:***@{host}")
            }
            _ => value.to_string(),
        },
        None => value.to_string(),
    };
    format!("{key}='{shown}'")
}

fn describe_sink(s: &SinkNode) -> String {
    let opts: Vec<String> = s.options.iter().map(|(k, v)| option_text(k, v)).collect();
    let table = if s.result_table { " (table mode)" } else { "" };
    format!(
        "Sink {} [{}]{table} {}",
        s.name,
        opts.join(", "),
        s.guarantee.as_str()
    )
}

/// A node's `'table.exec.state.ttl'` and whether it is event time, if it
/// keeps state under one.
fn state_ttl(kind: &NodeKind) -> Option<(i64, bool)> {
    let (ms, event_time) = match kind {
        NodeKind::UpdatingAggregate(u) => (u.state_ttl_ms, u.state_ttl_event_time),
        NodeKind::Join(j) => (j.state_ttl_ms, j.state_ttl_event_time),
        NodeKind::Rank(r) => (r.state_ttl_ms, r.state_ttl_event_time),
        NodeKind::KeepLast(k) => (k.state_ttl_ms, k.state_ttl_event_time),
        NodeKind::OverAggregate(o) => (o.spec.state_ttl_ms, o.spec.state_ttl_event_time),
        _ => return None,
    };
    ms.map(|ms| (ms, event_time))
}

/// How long state kept per key lives: for ever (marked), or until idle
/// for the time-to-live, by the wall clock or by the watermark.
fn retention(ttl_ms: Option<i64>, event_time: bool) -> String {
    match (ttl_ms, event_time) {
        (None, _) => "UNBOUNDED (for ever)".into(),
        (Some(ms), false) => format!(
            "until idle for {} (table.exec.state.ttl)",
            format_duration(ms)
        ),
        (Some(ms), true) => format!(
            "until idle for {} of event time, by the watermark (table.exec.state.ttl)",
            format_duration(ms)
        ),
    }
}

fn format_duration(ms: i64) -> String {
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}
