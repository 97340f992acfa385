//! `build`: the one place where plan descriptors become running operators.
//!
//! Consecutive nodes joined by `Forward` edges with equal parallelism are
//! fused into one stage (one thread per subtask); every other edge starts a
//! new stage, connected by the runtime's channels.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::{AggregateExprBuilder, AggregateFunctionExpr};
use eddy_connectors::{MaterializingSink, MemoryCollector, Options, SinkConfig, SourceConfig};
use eddy_operators::join::{JoinInput, JoinOperator};
use eddy_operators::late::LateOutput;
use eddy_operators::lookup::{LookupJoinOperator, LookupJoinSpec};
use eddy_operators::over::OverAggregateOperator;
use eddy_operators::project::ProjectOperator;
use eddy_operators::rank::RankOperator;
use eddy_operators::runtime::{Dataflow, Partitioning, Stage, StageInput};
use eddy_operators::session::SessionWindowOperator;
use eddy_operators::sink::SinkOperator;
use eddy_operators::temporal::TemporalJoinOperator;
use eddy_operators::ttl::StateTtl;
use eddy_operators::updating::UpdatingAggregateOperator;
use eddy_operators::watermark::WatermarkOperator;
use eddy_operators::window::{WindowAggregateOperator, WindowAssigner};
use eddy_operators::{Operator, Sink};

use crate::error::{PlanError, Result};
use crate::functions::Functions;
use crate::graph::{AggregateCall, EdgeKind, NodeKind, PhysicalGraph, PlanNode, WindowSpec};

/// How often a lookup join checks whether its table's files changed.
const LOOKUP_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// What building needs besides the graph.
#[derive(Debug, Clone, Default)]
pub struct BuildEnv {
    pub functions: Functions,
    /// Receives the rows of sinks whose connector is `memory`.
    pub memory: Option<MemoryCollector>,
}

type OperatorFactory = Arc<dyn Fn() -> eddy_operators::Result<Box<dyn Operator>> + Send + Sync>;

struct StageDraft {
    name: String,
    parallelism: usize,
    source: Option<SourceConfig>,
    operators: Vec<(String, OperatorFactory)>,
    inputs: Vec<StageInput>,
    last_node: usize,
}

pub fn build(graph: &PhysicalGraph, env: &BuildEnv) -> Result<Dataflow> {
    let mut stages: Vec<StageDraft> = Vec::new();
    let mut stage_of = vec![usize::MAX; graph.nodes.len()];
    for node in &graph.nodes {
        let input_schema: Option<SchemaRef> = graph
            .input_edge(node.id)
            .and_then(|e| graph.node(e.from))
            .map(|n| Arc::new(n.schema.clone()));
        let schema = Arc::new(node.schema.clone());
        let op_id = format!("node{}", node.id);
        let factory: Option<OperatorFactory> = match &node.kind {
            NodeKind::Source(s) => {
                let config = SourceConfig::parse(&Options::new(s.options.clone()), &schema)?;
                stage_of[node.id] = stages.len();
                // A table read twice (a self-join) is two sources: each
                // keeps its own position, under its stage's name.
                let base = format!("source:{}", s.name);
                let reads = stages
                    .iter()
                    .filter(|d| d.name.split('#').next() == Some(base.as_str()))
                    .count();
                let name = if reads == 0 {
                    base
                } else {
                    format!("{base}#{}", reads + 1)
                };
                stages.push(StageDraft {
                    name,
                    parallelism: node.parallelism,
                    source: Some(config),
                    operators: vec![],
                    inputs: vec![],
                    last_node: node.id,
                });
                None
            }
            NodeKind::Watermark(w) => {
                let expr = w.expr.to_physical(&schema, &env.functions)?;
                let idle = w
                    .idle_timeout_ms
                    .map(|ms| std::time::Duration::from_millis(ms.max(0) as u64));
                Some(Arc::new(move || {
                    Ok(
                        Box::new(WatermarkOperator::new(expr.clone()).with_idle_timeout(idle))
                            as Box<dyn Operator>,
                    )
                }))
            }
            NodeKind::Project(p) => {
                let input = input_schema
                    .clone()
                    .ok_or_else(|| PlanError::internal("projection without input"))?;
                let filter = p
                    .filter
                    .as_ref()
                    .map(|f| f.to_physical(&input, &env.functions))
                    .transpose()?;
                let exprs: Vec<Arc<dyn PhysicalExpr>> = p
                    .exprs
                    .iter()
                    .map(|e| e.to_physical(&input, &env.functions))
                    .collect::<Result<_>>()?;
                let out = schema.clone();
                Some(Arc::new(move || {
                    Ok(Box::new(ProjectOperator::try_new(
                        filter.clone(),
                        exprs.clone(),
                        out.clone(),
                    )?) as Box<dyn Operator>)
                }))
            }
            NodeKind::UpdatingAggregate(u) => {
                let input = input_schema
                    .clone()
                    .ok_or_else(|| PlanError::internal("aggregate without input"))?;
                let (aggs, filters) = aggregate_exprs(&u.aggregates, &input, env)?;
                let (keys, op_column) = (u.keys.clone(), u.op_column);
                let ttl = u.state_ttl_ms;
                Some(validated(Arc::new(move || {
                    let op = UpdatingAggregateOperator::try_new(
                        &input,
                        keys.clone(),
                        aggs.clone(),
                        filters.clone(),
                        op_column,
                    )?
                    .with_state_ttl(ttl.map(StateTtl::new));
                    Ok(Box::new(op) as Box<dyn Operator>)
                }))?)
            }
            NodeKind::WindowAggregate(w) => {
                let input = input_schema
                    .clone()
                    .ok_or_else(|| PlanError::internal("aggregate without input"))?;
                let (aggs, filters) = aggregate_exprs(&w.aggregates, &input, env)?;
                let (keys, time) = (w.keys.clone(), w.time_column);
                let lateness = w.allowed_lateness_ms;
                let cache = w
                    .cache_bytes
                    .map(|b| usize::try_from(b).unwrap_or(usize::MAX));
                let early = w
                    .early_fire_ms
                    .map(|ms| std::time::Duration::from_millis(ms.max(0) as u64));
                let late = w
                    .late_output
                    .as_ref()
                    .map(|l| LateOutput::try_new(&input, l.columns.clone(), &l.names))
                    .transpose()?;
                let assigner = match w.window {
                    WindowSpec::Tumble { size_ms } => {
                        Some(WindowAssigner::Tumble { size: size_ms })
                    }
                    WindowSpec::Hop { slide_ms, size_ms } => Some(WindowAssigner::Hop {
                        slide: slide_ms,
                        size: size_ms,
                    }),
                    WindowSpec::Cumulate { step_ms, size_ms } => Some(WindowAssigner::Cumulate {
                        step: step_ms,
                        size: size_ms,
                    }),
                    WindowSpec::Session { .. } => None,
                };
                let factory: OperatorFactory = match (assigner, w.window) {
                    (Some(assigner), _) => Arc::new(move || {
                        let mut op = WindowAggregateOperator::try_new(
                            &input,
                            keys.clone(),
                            time,
                            assigner,
                            aggs.clone(),
                        )?
                        .with_filters(filters.clone())?
                        .with_allowed_lateness(lateness)?
                        .with_early_fire(early);
                        if let Some(bytes) = cache {
                            op = op.with_cache_bytes(bytes);
                        }
                        if let Some(late) = &late {
                            op = op.with_late_output(late.clone());
                        }
                        Ok(Box::new(op) as Box<dyn Operator>)
                    }),
                    (None, spec) => {
                        let WindowSpec::Session { gap_ms } = spec else {
                            return Err(PlanError::internal("a window without an assigner"));
                        };
                        Arc::new(move || {
                            let mut op = SessionWindowOperator::try_new(
                                &input,
                                keys.clone(),
                                time,
                                gap_ms,
                                aggs.clone(),
                                filters.clone(),
                            )?
                            .with_allowed_lateness(lateness)?
                            .with_early_fire(early);
                            if let Some(late) = &late {
                                op = op.with_late_output(late.clone());
                            }
                            Ok(Box::new(op) as Box<dyn Operator>)
                        })
                    }
                };
                Some(validated(factory)?)
            }
            NodeKind::LookupJoin(l) => {
                let input = input_schema
                    .clone()
                    .ok_or_else(|| PlanError::internal("a lookup join without input"))?;
                let table_schema = Arc::new(l.table_schema.clone());
                let config =
                    SourceConfig::parse(&Options::new(l.table.options.clone()), &table_schema)?;
                let table = config.lookup_table().ok_or_else(|| {
                    PlanError::internal(format!("'{}' cannot be read whole", l.table.name))
                })?;
                let probe_keys = l
                    .probe_keys
                    .iter()
                    .map(|k| k.to_physical(&input, &env.functions))
                    .collect::<Result<Vec<_>>>()?;
                let width = schema.fields().len() - usize::from(l.op_column.is_some());
                let pairs = Arc::new(Schema::new(schema.fields()[..width].to_vec()));
                let residual = l
                    .residual
                    .as_ref()
                    .map(|r| r.to_physical(&pairs, &env.functions))
                    .transpose()?;
                let (join_type, table_keys, op_column) =
                    (l.join_type, l.table_keys.clone(), l.op_column);
                let output = schema.clone();
                Some(validated(Arc::new(move || {
                    let op = LookupJoinOperator::try_new(LookupJoinSpec {
                        table: table.clone(),
                        table_schema: table_schema.clone(),
                        table_keys: table_keys.clone(),
                        probe_keys: probe_keys.clone(),
                        join_type,
                        residual: residual.clone(),
                        output: output.clone(),
                        op_column,
                        recheck: LOOKUP_RECHECK,
                    })?;
                    Ok(Box::new(op) as Box<dyn Operator>)
                }))?)
            }
            NodeKind::TemporalJoin(t) => {
                let input = |i: usize| input_of(graph, node, i);
                let (probe, versions) = (input(0)?, input(1)?);
                let pairs = eddy_operators::temporal::pair_schema(&probe, &versions);
                let residual = t
                    .residual
                    .as_ref()
                    .map(|r| r.to_physical(&pairs, &env.functions))
                    .transpose()?;
                let t = t.clone();
                Some(validated(Arc::new(move || {
                    let op = TemporalJoinOperator::try_new(
                        t.join_type,
                        (&probe, t.probe.clone()),
                        (&versions, t.versions.clone()),
                        residual.clone(),
                    )?;
                    Ok(Box::new(op) as Box<dyn Operator>)
                }))?)
            }
            NodeKind::Join(j) => {
                let input = |i: usize| input_of(graph, node, i);
                let left = JoinInput {
                    schema: input(0)?,
                    keys: j.left_keys.clone(),
                    op_column: j.left_op,
                    expiry: j.left_expiry,
                };
                let right = JoinInput {
                    schema: input(1)?,
                    keys: j.right_keys.clone(),
                    op_column: j.right_op,
                    expiry: j.right_expiry,
                };
                let pairs = eddy_operators::join::pair_schema(&left, &right);
                let residual = j
                    .residual
                    .as_ref()
                    .map(|r| r.to_physical(&pairs, &env.functions))
                    .transpose()?;
                let (join_type, ttl) = (j.join_type, j.state_ttl_ms);
                Some(validated(Arc::new(move || {
                    let op = JoinOperator::try_new(
                        join_type,
                        left.clone(),
                        right.clone(),
                        residual.clone(),
                    )?
                    .with_state_ttl(ttl.map(StateTtl::new));
                    Ok(Box::new(op) as Box<dyn Operator>)
                }))?)
            }
            NodeKind::Rank(r) => {
                let input = input_schema
                    .clone()
                    .ok_or_else(|| PlanError::internal("a Top-N without an input"))?;
                let spec = r.clone();
                Some(validated(Arc::new(move || {
                    let op = RankOperator::try_new(&input, spec.clone())?;
                    Ok(Box::new(op) as Box<dyn Operator>)
                }))?)
            }
            NodeKind::OverAggregate(o) => {
                let input = input_schema
                    .clone()
                    .ok_or_else(|| PlanError::internal("an OVER aggregate without an input"))?;
                let (aggs, filters) = aggregate_exprs(&o.aggregates, &input, env)?;
                if filters.iter().any(Option::is_some) {
                    return Err(PlanError::internal("FILTER in an OVER aggregate"));
                }
                let spec = o.spec.clone();
                Some(validated(Arc::new(move || {
                    let op = OverAggregateOperator::try_new(&input, spec.clone(), aggs.clone())?;
                    Ok(Box::new(op) as Box<dyn Operator>)
                }))?)
            }
            NodeKind::Sink(s) => {
                let connector = s.options.get("connector").map(String::as_str);
                // A sink of a side output (late rows) has its own schema.
                let side = graph.input_edge(node.id).is_some_and(|e| e.port != 0);
                let out = match &input_schema {
                    Some(input) if !side => input.clone(),
                    _ => schema.clone(),
                };
                let mut options = s.options.clone();
                // A table-mode SELECT: the sink gets the changelog's net effect.
                let table = options.remove(crate::session::RESULT_MODE).as_deref() == Some("table");
                let wrap = move |sink: Box<dyn Sink>,
                                 out: &SchemaRef|
                      -> eddy_operators::Result<Box<dyn Operator>> {
                    let sink = if table {
                        Box::new(MaterializingSink::new(sink, out)?) as Box<dyn Sink>
                    } else {
                        sink
                    };
                    Ok(Box::new(SinkOperator::new(sink)))
                };
                let inner = if table {
                    MaterializingSink::output_schema(&out)
                } else {
                    out.clone()
                };
                if connector == Some("memory") {
                    let collector = env.memory.clone().unwrap_or_default();
                    Some(Arc::new(move || wrap(Box::new(collector.sink()), &out)))
                } else {
                    let config = SinkConfig::parse(&Options::new(options))?;
                    Some(Arc::new(move || wrap(config.build(inner.clone())?, &out)))
                }
            }
        };
        let Some(factory) = factory else { continue };
        let edges = graph.input_edges(node.id);
        let Some(edge) = edges.first() else {
            return Err(PlanError::internal(format!(
                "node {} has no input",
                node.id
            )));
        };
        let from_stage = stage_of[edge.from];
        let fuse = edges.len() == 1
            && edge.kind == EdgeKind::Forward
            && edge.port == 0
            && stages[from_stage].parallelism == node.parallelism
            && stages[from_stage].last_node == edge.from;
        if fuse {
            stages[from_stage].operators.push((op_id, factory));
            stages[from_stage].last_node = node.id;
            stage_of[node.id] = from_stage;
        } else {
            let inputs = edges
                .iter()
                .map(|edge| StageInput {
                    stage: stage_of[edge.from],
                    partitioning: match &edge.kind {
                        EdgeKind::Forward => Partitioning::Forward,
                        EdgeKind::Gather => Partitioning::Gather,
                        EdgeKind::Shuffle { keys } => Partitioning::Hash(keys.clone()),
                    },
                    port: edge.port,
                })
                .collect();
            stage_of[node.id] = stages.len();
            stages.push(StageDraft {
                name: stage_name(&node.kind),
                parallelism: node.parallelism,
                source: None,
                operators: vec![(op_id, factory)],
                inputs,
                last_node: node.id,
            });
        }
    }
    let stages = stages
        .into_iter()
        .map(|d| {
            let operator_ids = d.operators.iter().map(|(id, _)| id.clone()).collect();
            let factories: Vec<OperatorFactory> = d.operators.into_iter().map(|(_, f)| f).collect();
            let source = d.source.map(|config| {
                Box::new(move |_subtask: usize| Ok(config.build()?))
                    as eddy_operators::runtime::SourceFactory
            });
            Stage {
                name: d.name,
                parallelism: d.parallelism,
                source,
                operators: Box::new(move |_subtask| factories.iter().map(|f| f()).collect()),
                inputs: d.inputs,
                operator_ids,
            }
        })
        .collect();
    Ok(Dataflow { stages })
}

/// Builds one operator right away, so a bad descriptor fails the build
/// rather than the first subtask.
fn validated(factory: OperatorFactory) -> Result<OperatorFactory> {
    factory()?;
    Ok(factory)
}

type AggregateExprs = (
    Vec<Arc<AggregateFunctionExpr>>,
    Vec<Option<Arc<dyn PhysicalExpr>>>,
);

/// Compiles aggregate calls (and their FILTERs) over `input`.
fn aggregate_exprs(
    calls: &[AggregateCall],
    input: &SchemaRef,
    env: &BuildEnv,
) -> Result<AggregateExprs> {
    let mut aggs = Vec::new();
    let mut filters = Vec::new();
    for call in calls {
        let udaf = env
            .functions
            .aggregate(&call.function)
            .ok_or_else(|| PlanError::internal(format!("unknown aggregate {}", call.function)))?;
        let args = call
            .args
            .iter()
            .map(|a| a.to_physical(input, &env.functions))
            .collect::<Result<_>>()?;
        let expr = AggregateExprBuilder::new(udaf, args)
            .schema(input.clone())
            .alias(call.output_name.clone())
            .with_distinct(call.distinct)
            .build()?;
        aggs.push(Arc::new(expr));
        filters.push(
            call.filter
                .as_ref()
                .map(|f| f.to_physical(input, &env.functions))
                .transpose()?,
        );
    }
    Ok((aggs, filters))
}

fn stage_name(kind: &NodeKind) -> String {
    match kind {
        NodeKind::Source(s) => format!("source:{}", s.name),
        NodeKind::Watermark(_) => "watermark".into(),
        NodeKind::Project(_) => "project".into(),
        NodeKind::WindowAggregate(_) => "window".into(),
        NodeKind::UpdatingAggregate(_) => "aggregate".into(),
        NodeKind::Join(_) => "join".into(),
        NodeKind::LookupJoin(_) => "lookup".into(),
        NodeKind::TemporalJoin(_) => "temporal-join".into(),
        NodeKind::Rank(_) => "topn".into(),
        NodeKind::OverAggregate(_) => "over".into(),
        NodeKind::Sink(s) => format!("sink:{}", s.name),
    }
}

/// The schema of input `i` of a node of two inputs (a join).
fn input_of(graph: &PhysicalGraph, node: &PlanNode, i: usize) -> Result<SchemaRef> {
    graph
        .input_edges(node.id)
        .iter()
        .find(|e| e.input == i)
        .and_then(|e| graph.node(e.from))
        .map(|n| Arc::new(n.schema.clone()))
        .ok_or_else(|| PlanError::internal("a join without two inputs"))
}
