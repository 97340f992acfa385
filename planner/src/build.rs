//! `build`: the one place where plan descriptors become running operators.
//!
//! Consecutive nodes joined by `Forward` edges with equal parallelism are
//! fused into one stage (one thread per subtask); every other edge starts a
//! new stage, connected by the runtime's channels. Each node kind has its
//! own function that turns its descriptor into an operator factory.

use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::{AggregateExprBuilder, AggregateFunctionExpr};
use eddy_connectors::{ConnectorRegistry, MaterializingSink, Role, Table, Validated};
use eddy_operators::checkpoint::Committers;
use eddy_operators::join::{JoinInput, JoinOperator};
use eddy_operators::late::LateOutput;
use eddy_operators::lookup::{LookupJoinOperator, LookupJoinSpec};
use eddy_operators::over::OverAggregateOperator;
use eddy_operators::project::ProjectOperator;
use eddy_operators::rank::RankOperator;
use eddy_operators::ranking::keep_last::KeepLastOperator;
use eddy_operators::runtime::{Dataflow, Partitioning, Stage, StageInput};
use eddy_operators::session::SessionWindowOperator;
use eddy_operators::sink::SinkOperator;
use eddy_operators::source::{BoundOp, ColumnBound};
use eddy_operators::temporal::TemporalJoinOperator;
use eddy_operators::ttl::StateTtl;
use eddy_operators::union::UnionOperator;
use eddy_operators::updating::UpdatingAggregateOperator;
use eddy_operators::watermark::WatermarkOperator;
use eddy_operators::window::{WindowAggregateOperator, WindowAssigner};
use eddy_operators::{Operator, Sink, SourceProvider};

use crate::error::{PlanError, Result};
use crate::expr::{BinaryOp, ScalarExpr};
use crate::functions::Functions;
use crate::graph::{
    AggregateCall, EdgeKind, JoinNode, LookupJoinNode, NodeKind, OverAggregateNode, PhysicalGraph,
    PlanNode, ProjectNode, SinkNode, SourceBound, SourceNode, TemporalJoinNode,
    UpdatingAggregateNode, WatermarkNode, WindowAggregateNode, WindowSpec,
};

/// How often a lookup join checks whether its table's files changed.
const LOOKUP_RECHECK: Duration = Duration::from_secs(1);

/// What building needs besides the graph: the functions and connectors
/// the plan names.
#[derive(Debug, Clone, Default)]
pub struct BuildEnv {
    pub functions: Functions,
    pub connectors: ConnectorRegistry,
}

type OperatorFactory = Arc<dyn Fn() -> eddy_operators::Result<Box<dyn Operator>> + Send + Sync>;

struct StageDraft {
    name: String,
    parallelism: usize,
    source: Option<Arc<dyn SourceProvider>>,
    operators: Vec<(String, OperatorFactory)>,
    inputs: Vec<StageInput>,
    last_node: usize,
}

/// Turns a plan into a dataflow: stages of fused operators.
pub fn build(graph: &PhysicalGraph, env: &BuildEnv) -> Result<Dataflow> {
    let graph = &graph.clone().pruned();
    let mut stages: Vec<StageDraft> = Vec::new();
    let mut stage_of = vec![usize::MAX; graph.nodes.len()];
    let mut committers = Committers::new();
    for node in &graph.nodes {
        if let NodeKind::Source(s) = &node.kind {
            stage_of[node.id] = stages.len();
            stages.push(source_stage(graph, s, node, env)?);
            continue;
        }
        let op_id = format!("node{}", node.id);
        let factory = operator(graph, node, env, &op_id, &mut committers)?;
        place(graph, node, (op_id, factory), &mut stages, &mut stage_of)?;
    }
    let stages = stages.into_iter().map(finish_stage).collect();
    Ok(Dataflow { stages, committers })
}

/// The operator factory of a node that is not a source.
fn operator(
    graph: &PhysicalGraph,
    node: &PlanNode,
    env: &BuildEnv,
    op_id: &str,
    committers: &mut Committers,
) -> Result<OperatorFactory> {
    let input = || first_input(graph, node);
    let schema = Arc::new(node.schema.clone());
    match &node.kind {
        NodeKind::Source(_) => Err(PlanError::internal("a source is a stage, not an operator")),
        NodeKind::Watermark(w) => watermark(w, &schema, env),
        NodeKind::Project(p) => project(p, &input()?, &schema, env),
        NodeKind::UpdatingAggregate(u) => updating_aggregate(u, &input()?, env),
        NodeKind::WindowAggregate(w) => window_aggregate(w, &input()?, env),
        NodeKind::LookupJoin(l) => lookup_join(l, &input()?, &schema, env),
        NodeKind::TemporalJoin(t) => temporal_join(t, graph, node, env),
        NodeKind::Join(j) => join(j, graph, node, env),
        NodeKind::Rank(r) => {
            let (input, spec) = (input()?, r.clone());
            validated(Arc::new(move || {
                Ok(Box::new(RankOperator::try_new(&input, spec.clone())?) as Box<dyn Operator>)
            }))
        }
        NodeKind::KeepLast(k) => {
            let (input, spec) = (input()?, k.clone());
            validated(Arc::new(move || {
                let op = KeepLastOperator::try_new(&input, spec.clone())?;
                Ok(Box::new(op) as Box<dyn Operator>)
            }))
        }
        NodeKind::OverAggregate(o) => over_aggregate(o, &input()?, env),
        NodeKind::Union => Ok(Arc::new(move || {
            Ok(Box::new(UnionOperator::new(schema.clone())) as Box<dyn Operator>)
        })),
        NodeKind::Sink(s) => sink(s, graph, node, env, op_id, committers),
    }
}

/// Fuses `factory` into its input's stage where it can, or starts a stage.
fn place(
    graph: &PhysicalGraph,
    node: &PlanNode,
    (op_id, factory): (String, OperatorFactory),
    stages: &mut Vec<StageDraft>,
    stage_of: &mut [usize],
) -> Result<()> {
    let edges = graph.input_edges(node.id);
    let Some(edge) = edges.first() else {
        return Err(PlanError::internal(format!(
            "node {} has no input",
            node.id
        )));
    };
    let from_stage = stage_of[edge.from];
    // A node read by several (a source shared by a statement set's
    // INSERTs) ends its stage, which sends each batch to all of them.
    let fuse = edges.len() == 1
        && graph
            .edges
            .iter()
            .filter(|e| e.from == edge.from && e.port == 0)
            .count()
            == 1
        && edge.kind == EdgeKind::Forward
        && edge.port == 0
        && stages[from_stage].parallelism == node.parallelism
        && stages[from_stage].last_node == edge.from;
    if fuse {
        stages[from_stage].operators.push((op_id, factory));
        stages[from_stage].last_node = node.id;
        stage_of[node.id] = from_stage;
        return Ok(());
    }
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
    Ok(())
}

fn finish_stage(d: StageDraft) -> Stage {
    let operator_ids = d.operators.iter().map(|(id, _)| id.clone()).collect();
    let factories: Vec<OperatorFactory> = d.operators.into_iter().map(|(_, f)| f).collect();
    Stage {
        name: d.name,
        parallelism: d.parallelism,
        source: d.source,
        operators: Box::new(move |_subtask| factories.iter().map(|f| f()).collect()),
        inputs: d.inputs,
        operator_ids,
    }
}

/// Validates a plan's stored options again, with the registry this build
/// has (a connector may be missing from it). A table's options may hold
/// those of both roles (they were checked for each when declared), so
/// either role's are accepted here; `role` is what the connector must do.
fn revalidate(
    env: &BuildEnv,
    options: &std::collections::BTreeMap<String, String>,
    role: Role,
) -> Result<Validated> {
    let given: Vec<(String, String)> = options
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let validated = env
        .connectors
        .validate(&given, Role::Both)
        .map_err(|e| PlanError::internal(format!("the plan's connector options: {e}")))?;
    let able = match role {
        Role::Source => validated.connector.is_source(),
        Role::Sink => validated.connector.is_sink(),
        Role::Both => true,
    };
    if !able {
        return Err(PlanError::internal(format!(
            "the plan's connector '{}' cannot be used as a {}",
            validated.connector.name(),
            role.as_str()
        )));
    }
    Ok(validated)
}

/// A source's stage. A table read twice (a self-join) is two sources:
/// each keeps its own positions, under its stage's name.
fn source_stage(
    graph: &PhysicalGraph,
    s: &SourceNode,
    node: &PlanNode,
    env: &BuildEnv,
) -> Result<StageDraft> {
    let declared = Arc::new(
        s.read
            .as_ref()
            .map_or(&node.schema, |r| &r.declared)
            .clone(),
    );
    let provider = env.connectors.source(
        &revalidate(env, &s.options, Role::Source)?,
        Table {
            name: &s.name,
            schema: &declared,
            primary_key: &s.primary_key,
        },
    )?;
    let provider = provider
        .bounded(&column_bounds(&s.bounds))
        .unwrap_or(provider);
    let provider = match &s.read {
        Some(r) => eddy_operators::source::project(provider, r.columns.clone()),
        None => provider,
    };
    let name = graph
        .source_stage(node.id)
        .ok_or_else(|| PlanError::internal(format!("node {} is not a source", node.id)))?;
    Ok(StageDraft {
        name,
        parallelism: node.parallelism,
        source: Some(provider),
        operators: vec![],
        inputs: vec![],
        last_node: node.id,
    })
}

/// A source's bounds as its connector takes them.
fn column_bounds(bounds: &[SourceBound]) -> Vec<ColumnBound> {
    bounds
        .iter()
        .filter_map(|b| {
            let op = match b.op {
                BinaryOp::Eq => BoundOp::Eq,
                BinaryOp::Lt => BoundOp::Lt,
                BinaryOp::LtEq => BoundOp::LtEq,
                BinaryOp::Gt => BoundOp::Gt,
                BinaryOp::GtEq => BoundOp::GtEq,
                _ => return None,
            };
            let value = b.value.literal_value().filter(|v| !v.is_null())?;
            Some(ColumnBound {
                column: b.column.clone(),
                op,
                value,
            })
        })
        .collect()
}

fn watermark(w: &WatermarkNode, schema: &SchemaRef, env: &BuildEnv) -> Result<OperatorFactory> {
    let expr = w.expr.to_physical(schema, &env.functions)?;
    let idle = w
        .idle_timeout_ms
        .map(|ms| Duration::from_millis(ms.max(0) as u64));
    let processing_time = w.processing_time;
    let monotonic = monotonic_column(&w.expr, schema);
    Ok(Arc::new(move || {
        let op = WatermarkOperator::new(expr.clone())
            .with_idle_timeout(idle)
            .with_processing_time(processing_time)
            .with_monotonic_column(monotonic);
        Ok(Box::new(op) as Box<dyn Operator>)
    }))
}

/// The timestamp column a watermark expression never decreases with:
/// `WATERMARK FOR ts AS ts` or `ts - INTERVAL ...` (`+` too), the bounded
/// out-of-orderness of nearly every source.
fn monotonic_column(expr: &ScalarExpr, schema: &SchemaRef) -> Option<usize> {
    use crate::expr::BinaryOp;
    let column = match expr {
        ScalarExpr::Column { name, .. } => name,
        ScalarExpr::Binary {
            op: BinaryOp::Minus | BinaryOp::Plus,
            left,
            right,
        } => match (left.as_ref(), right.as_ref()) {
            (
                ScalarExpr::Column { name, .. },
                ScalarExpr::Literal {
                    data_type: DataType::Interval(_),
                    ..
                },
            ) => name,
            _ => return None,
        },
        _ => return None,
    };
    let index = schema.index_of(column).ok()?;
    matches!(schema.field(index).data_type(), DataType::Timestamp(..)).then_some(index)
}

fn project(
    p: &ProjectNode,
    input: &SchemaRef,
    schema: &SchemaRef,
    env: &BuildEnv,
) -> Result<OperatorFactory> {
    let filter = p
        .filter
        .as_ref()
        .map(|f| f.to_physical(input, &env.functions))
        .transpose()?;
    let exprs: Vec<Arc<dyn PhysicalExpr>> = p
        .exprs
        .iter()
        .map(|e| e.to_physical(input, &env.functions))
        .collect::<Result<_>>()?;
    let out = schema.clone();
    Ok(Arc::new(move || {
        Ok(Box::new(ProjectOperator::try_new(
            filter.clone(),
            exprs.clone(),
            out.clone(),
        )?) as Box<dyn Operator>)
    }))
}

fn updating_aggregate(
    u: &UpdatingAggregateNode,
    input: &SchemaRef,
    env: &BuildEnv,
) -> Result<OperatorFactory> {
    let (aggs, filters) = aggregate_exprs(&u.aggregates, input, env)?;
    let (input, keys, op_column) = (input.clone(), u.keys.clone(), u.op_column);
    let ttl = StateTtl::planned(u.state_ttl_ms, u.state_ttl_event_time);
    validated(Arc::new(move || {
        let op = UpdatingAggregateOperator::try_new(
            &input,
            keys.clone(),
            aggs.clone(),
            filters.clone(),
            op_column,
        )?
        .with_state_ttl(ttl.clone());
        Ok(Box::new(op) as Box<dyn Operator>)
    }))
}

fn window_aggregate(
    w: &WindowAggregateNode,
    input: &SchemaRef,
    env: &BuildEnv,
) -> Result<OperatorFactory> {
    let (aggs, filters) = aggregate_exprs(&w.aggregates, input, env)?;
    let (keys, time, lateness) = (w.keys.clone(), w.time_column, w.allowed_lateness_ms);
    let cache = w
        .cache_bytes
        .map(|b| usize::try_from(b).unwrap_or(usize::MAX));
    let early = w
        .early_fire_ms
        .map(|ms| Duration::from_millis(ms.max(0) as u64));
    let late = w
        .late_output
        .as_ref()
        .map(|l| LateOutput::try_new(input, l.columns.clone(), &l.names))
        .transpose()?;
    let input = input.clone();
    let assigner = match w.window {
        WindowSpec::Tumble { size_ms } => WindowAssigner::Tumble { size: size_ms },
        WindowSpec::Hop { slide_ms, size_ms } => WindowAssigner::Hop {
            slide: slide_ms,
            size: size_ms,
        },
        WindowSpec::Cumulate { step_ms, size_ms } => WindowAssigner::Cumulate {
            step: step_ms,
            size: size_ms,
        },
        WindowSpec::Session { gap_ms } => {
            return validated(Arc::new(move || {
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
            }));
        }
    };
    validated(Arc::new(move || {
        let mut op =
            WindowAggregateOperator::try_new(&input, keys.clone(), time, assigner, aggs.clone())?
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
    }))
}

fn lookup_join(
    l: &LookupJoinNode,
    input: &SchemaRef,
    schema: &SchemaRef,
    env: &BuildEnv,
) -> Result<OperatorFactory> {
    let table_schema = Arc::new(l.table_schema.clone());
    let provider = env.connectors.source(
        &revalidate(env, &l.table.options, Role::Source)?,
        Table::new(&l.table.name, &table_schema),
    )?;
    let table = provider
        .lookup_table()
        .ok_or_else(|| PlanError::internal(format!("'{}' cannot be read whole", l.table.name)))?;
    let probe_keys = l
        .probe_keys
        .iter()
        .map(|k| k.to_physical(input, &env.functions))
        .collect::<Result<Vec<_>>>()?;
    let width = schema.fields().len() - usize::from(l.op_column.is_some());
    let pairs = Arc::new(Schema::new(schema.fields()[..width].to_vec()));
    let residual = l
        .residual
        .as_ref()
        .map(|r| r.to_physical(&pairs, &env.functions))
        .transpose()?;
    let (join_type, table_keys, op_column) = (l.join_type, l.table_keys.clone(), l.op_column);
    let output = schema.clone();
    validated(Arc::new(move || {
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
    }))
}

fn temporal_join(
    t: &TemporalJoinNode,
    graph: &PhysicalGraph,
    node: &PlanNode,
    env: &BuildEnv,
) -> Result<OperatorFactory> {
    let (probe, versions) = (input_of(graph, node, 0)?, input_of(graph, node, 1)?);
    let pairs = eddy_operators::temporal::pair_schema(&probe, &versions);
    let residual = t
        .residual
        .as_ref()
        .map(|r| r.to_physical(&pairs, &env.functions))
        .transpose()?;
    let t = t.clone();
    validated(Arc::new(move || {
        let op = TemporalJoinOperator::try_new(
            t.join_type,
            (&probe, t.probe.clone()),
            (&versions, t.versions.clone()),
            residual.clone(),
        )?;
        Ok(Box::new(op) as Box<dyn Operator>)
    }))
}

fn join(
    j: &JoinNode,
    graph: &PhysicalGraph,
    node: &PlanNode,
    env: &BuildEnv,
) -> Result<OperatorFactory> {
    let left = JoinInput {
        schema: input_of(graph, node, 0)?,
        keys: j.left_keys.clone(),
        op_column: j.left_op,
        expiry: j.left_expiry,
    };
    let right = JoinInput {
        schema: input_of(graph, node, 1)?,
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
    let (join_type, delay) = (j.join_type, j.watermark_delay_ms);
    let ttl = StateTtl::planned(j.state_ttl_ms, j.state_ttl_event_time);
    validated(Arc::new(move || {
        let op = JoinOperator::try_new(join_type, left.clone(), right.clone(), residual.clone())?
            .with_state_ttl(ttl.clone())
            .with_watermark_delay(delay);
        Ok(Box::new(op) as Box<dyn Operator>)
    }))
}

fn over_aggregate(
    o: &OverAggregateNode,
    input: &SchemaRef,
    env: &BuildEnv,
) -> Result<OperatorFactory> {
    let (aggs, filters) = aggregate_exprs(&o.aggregates, input, env)?;
    if filters.iter().any(Option::is_some) {
        return Err(PlanError::internal("FILTER in an OVER aggregate"));
    }
    let (input, spec) = (input.clone(), o.spec.clone());
    validated(Arc::new(move || {
        let op = OverAggregateOperator::try_new(&input, spec.clone(), aggs.clone())?;
        Ok(Box::new(op) as Box<dyn Operator>)
    }))
}

/// A sink's operator; its committer joins the dataflow's.
fn sink(
    s: &SinkNode,
    graph: &PhysicalGraph,
    node: &PlanNode,
    env: &BuildEnv,
    op_id: &str,
    committers: &mut Committers,
) -> Result<OperatorFactory> {
    // A sink of a side output (late rows) has its own schema.
    let side = graph.input_edge(node.id).is_some_and(|e| e.port != 0);
    let out = match first_input(graph, node) {
        Ok(input) if !side => input,
        _ => Arc::new(node.schema.clone()),
    };
    // A table-mode SELECT: the sink gets the changelog's net effect.
    let table = s.result_table;
    let inner = if table {
        MaterializingSink::output_schema(&out)
    } else {
        out.clone()
    };
    let provider = env.connectors.sink(
        &revalidate(env, &s.options, Role::Sink)?,
        Table {
            name: &s.name,
            schema: &inner,
            primary_key: &s.primary_key,
        },
    )?;
    let committer = provider.committer();
    if let Some(c) = &committer {
        committers.insert(op_id.to_string(), c.clone());
    }
    Ok(Arc::new(move || {
        let writer = provider.writer()?;
        let writer = if table {
            Box::new(MaterializingSink::new(writer, &out)?) as Box<dyn Sink>
        } else {
            writer
        };
        Ok(Box::new(SinkOperator::new(writer, committer.clone())) as Box<dyn Operator>)
    }))
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
        NodeKind::KeepLast(_) => "normalize".into(),
        NodeKind::OverAggregate(_) => "over".into(),
        NodeKind::Union => "union".into(),
        NodeKind::Sink(s) => format!("sink:{}", s.name),
    }
}

/// The schema of a node's first input.
fn first_input(graph: &PhysicalGraph, node: &PlanNode) -> Result<SchemaRef> {
    graph
        .input_edge(node.id)
        .and_then(|e| graph.node(e.from))
        .map(|n| Arc::new(n.schema.clone()))
        .ok_or_else(|| PlanError::internal(format!("node {} has no input", node.id)))
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
