//! The abstract syntax tree of Eddy's SQL dialect.
//!
//! Every node carries the [`Span`] of source text it was parsed from, so the
//! planner can point at the exact token when it rejects a query. The tree is
//! plain data (`serde`), printable with `{:?}`, and knows nothing of types or
//! catalogs: the planner binds it.

use serde::{Deserialize, Serialize};

/// A byte range `start..end` of the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    /// The smallest span that covers both `self` and `other`.
    pub fn union(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// An identifier. Unquoted identifiers are folded to lower case (SQL names
/// are case-insensitive); quoted ones (`"Name"` or `` `Name` ``) keep their case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ident {
    pub value: String,
    pub quoted: bool,
    pub span: Span,
}

/// A file is a list of statements separated by `;`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    pub kind: StatementKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StatementKind {
    CreateSource(CreateSource),
    CreateSink(CreateSink),
    /// `CREATE [MATERIALIZED] VIEW name [(columns)] AS query`.
    CreateView(CreateView),
    Insert(Insert),
    /// `EXECUTE STATEMENT SET BEGIN insert; ... END` (or `BEGIN STATEMENT
    /// SET; ... END`): the INSERTs run as one job.
    StatementSet(Vec<Insert>),
    Query(Query),
    Explain(Box<Statement>),
    /// `DROP SOURCE|TABLE|SINK|VIEW|MATERIALIZED VIEW [IF EXISTS] name`.
    Drop(Drop),
    /// `SHOW SOURCES|TABLES|SINKS|VIEWS|JOBS|CONNECTORS`.
    Show(ShowKind),
    /// `DESCRIBE name`.
    Describe(Ident),
    /// `DESCRIBE CONNECTOR name`: the connector's options.
    DescribeConnector(Ident),
    /// `SET key = value`.
    Set(SqlOption),
    /// `CREATE [TEMPORARY [SYSTEM]] FUNCTION [IF NOT EXISTS] name AS 'class'
    /// [LANGUAGE lang]` (Flink's, for a Java class).
    CreateFunction(CreateFunction),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateFunction {
    pub name: Ident,
    pub class: String,
    pub class_span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateView {
    pub name: Ident,
    pub materialized: bool,
    /// `CREATE [TEMPORARY] VIEW IF NOT EXISTS`.
    #[serde(default)]
    pub if_not_exists: bool,
    pub columns: Vec<Ident>,
    pub query: Query,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectKind {
    Source,
    /// `DROP TABLE`: a source, a sink or both.
    Table,
    Sink,
    View,
    MaterializedView,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Source => "SOURCE",
            ObjectKind::Table => "TABLE",
            ObjectKind::Sink => "SINK",
            ObjectKind::View => "VIEW",
            ObjectKind::MaterializedView => "MATERIALIZED VIEW",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drop {
    pub kind: ObjectKind,
    pub if_exists: bool,
    pub name: Ident,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShowKind {
    Sources,
    /// Flink's `SHOW TABLES`: every source and sink.
    Tables,
    Sinks,
    Views,
    Jobs,
    Connectors,
}

impl ShowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ShowKind::Sources => "SOURCES",
            ShowKind::Tables => "TABLES",
            ShowKind::Sinks => "SINKS",
            ShowKind::Views => "VIEWS",
            ShowKind::Jobs => "JOBS",
            ShowKind::Connectors => "CONNECTORS",
        }
    }
}

/// `CREATE SOURCE name (columns [, WATERMARK FOR col AS expr]) WITH (options)`,
/// or Flink's `CREATE [TEMPORARY] TABLE [IF NOT EXISTS] name (...)
/// [PARTITIONED BY (cols)] WITH (...)`: a table is read, written or both,
/// as its connector allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateSource {
    pub name: Ident,
    /// Spelled `CREATE TABLE`: also a sink when the connector writes.
    #[serde(default)]
    pub table: bool,
    #[serde(default)]
    pub if_not_exists: bool,
    pub columns: Vec<ColumnDef>,
    /// `PARTITIONED BY (a, b)` (a table written by a file sink).
    #[serde(default)]
    pub partitioned_by: Vec<Ident>,
    pub watermark: Option<Watermark>,
    /// `PRIMARY KEY (cols) NOT ENFORCED`.
    pub primary_key: Vec<Ident>,
    pub options: Vec<SqlOption>,
}

/// `CREATE SINK name [(columns)] WITH (options) [AS query]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateSink {
    pub name: Ident,
    pub columns: Option<Vec<ColumnDef>>,
    /// `PARTITIONED BY (a, b)`: a file sink writes each row under
    /// `a=<value>/b=<value>/`.
    #[serde(default)]
    pub partitioned_by: Vec<Ident>,
    pub options: Vec<SqlOption>,
    pub query: Option<Query>,
}

/// `INSERT INTO sink [(columns)] query` (the query may be `VALUES ...`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insert {
    pub target: Ident,
    /// `INSERT INTO t (a, b) ...`: the columns written, in the query's order.
    #[serde(default)]
    pub columns: Vec<Ident>,
    pub query: Query,
    pub span: Span,
}

/// A column of a CREATE statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: Ident,
    pub kind: ColumnKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ColumnKind {
    /// `name TYPE [NOT NULL]`: read from (and written to) the connector.
    Physical(DataType),
    /// `name AS expr`: computed from the other columns when read, not
    /// written.
    Computed(Expr),
    /// `name TYPE METADATA [FROM 'key'] [VIRTUAL]`: a connector's metadata
    /// (a Kafka record's partition, offset, timestamp), named `key` or
    /// the column's name; a `VIRTUAL` one is only read.
    Metadata {
        data_type: DataType,
        key: Option<String>,
        is_virtual: bool,
    },
}

impl ColumnDef {
    /// The declared type of a physical column.
    pub fn data_type(&self) -> Option<&DataType> {
        match &self.kind {
            ColumnKind::Physical(t) | ColumnKind::Metadata { data_type: t, .. } => Some(t),
            ColumnKind::Computed(_) => None,
        }
    }
}

/// `WATERMARK FOR column AS expr`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Watermark {
    pub column: Ident,
    pub expr: Expr,
    pub span: Span,
}

/// `key = 'value'` inside `WITH (...)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlOption {
    pub key: String,
    pub value: String,
    pub span: Span,
    /// Where the key is written (for errors about an unknown option).
    #[serde(default)]
    pub key_span: Span,
    /// Where the value is written (for errors about a bad value).
    #[serde(default)]
    pub value_span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataType {
    pub kind: DataTypeKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DataTypeKind {
    Boolean,
    TinyInt,
    SmallInt,
    Int,
    BigInt,
    Float,
    Double,
    Decimal {
        precision: u8,
        scale: i8,
    },
    Varchar,
    Bytes,
    Date,
    /// `TIMESTAMP[(p)]`; `None` means the default precision (6, as in Flink).
    Timestamp {
        precision: Option<u8>,
    },
    /// `ROW<name TYPE, ...>` (or `ROW(name TYPE, ...)`): a nested record.
    Row(Vec<RowField>),
    /// `ARRAY<TYPE>`.
    Array(Box<DataType>),
    /// `MAP<KEY, VALUE>`.
    Map(Box<DataType>, Box<DataType>),
}

/// A field of a `ROW<...>` type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowField {
    pub name: Ident,
    pub data_type: DataType,
}

/// A query: `[WITH ctes] body [ORDER BY ..] [LIMIT n]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    pub with: Vec<Cte>,
    pub body: SetExpr,
    pub order_by: Vec<OrderByExpr>,
    pub limit: Option<Expr>,
    pub span: Span,
}

/// `name [(columns)] AS (query)` in a `WITH` clause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cte {
    pub alias: TableAlias,
    pub query: Query,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SetExpr {
    Select(Box<Select>),
    /// `left UNION [ALL] right`.
    Union {
        left: Box<SetExpr>,
        right: Box<SetExpr>,
        /// `UNION ALL` keeps duplicates; `UNION` removes them.
        all: bool,
    },
    /// `VALUES (a, b), (c, d)`: a bounded table of literal rows.
    Values(Values),
    /// `( query )` as an operand of a set operation.
    Query(Box<Query>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Values {
    pub rows: Vec<Vec<Expr>>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderByExpr {
    pub expr: Expr,
    /// `Some(true)` for ASC, `Some(false)` for DESC, `None` if unsaid.
    pub asc: Option<bool>,
}

/// `SELECT [DISTINCT] items FROM from [WHERE ..] [GROUP BY ..] [HAVING ..]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Select {
    pub distinct: bool,
    pub projection: Vec<SelectItem>,
    /// Comma-separated FROM items (a comma is a cross join).
    pub from: Vec<TableRef>,
    pub selection: Option<Expr>,
    pub group_by: Vec<Expr>,
    pub having: Option<Expr>,
    pub span: Span,
}

// Built once per query at parse time: size does not matter here.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SelectItem {
    /// `*`
    Wildcard {
        span: Span,
    },
    /// `t.*`
    QualifiedWildcard {
        table: Ident,
        span: Span,
    },
    Expr {
        expr: Expr,
        alias: Option<Ident>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRef {
    pub kind: TableRefKind,
    pub alias: Option<TableAlias>,
    /// `FOR SYSTEM_TIME AS OF expr` (a temporal join's version time).
    pub for_system_time: Option<Expr>,
    pub span: Span,
}

/// `[AS] name [(col, ...)]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableAlias {
    pub name: Ident,
    pub columns: Vec<Ident>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TableRefKind {
    Named(Ident),
    /// A window table-valued function, in Flink's form
    /// `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size))` or the short form
    /// `TUMBLE(t, ts, size)`.
    Window(WindowTvf),
    /// `( query )`.
    Subquery(Box<Query>),
    /// `left [INNER|LEFT|RIGHT|FULL [OUTER]|CROSS] JOIN right [ON ..|USING (..)]`.
    Join(Box<Join>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Join {
    pub left: TableRef,
    pub right: TableRef,
    pub kind: JoinKind,
    pub constraint: JoinConstraint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
    Cross,
}

impl JoinKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JoinKind::Inner => "JOIN",
            JoinKind::Left => "LEFT JOIN",
            JoinKind::Right => "RIGHT JOIN",
            JoinKind::Full => "FULL JOIN",
            JoinKind::Cross => "CROSS JOIN",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JoinConstraint {
    On(Expr),
    Using(Vec<Ident>),
    None,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowTvf {
    pub kind: WindowKind,
    pub table: Ident,
    /// `SESSION(TABLE t PARTITION BY k, ...)`: the partition keys.
    pub partition_by: Vec<Ident>,
    pub time_column: Ident,
    /// The interval arguments in order (TUMBLE: size; HOP: slide, size;
    /// SESSION: gap; CUMULATE: step, size).
    pub args: Vec<Expr>,
    /// Flink's form `TABLE(F(TABLE t, DESCRIPTOR(ts), ..))` or the short one.
    pub flink_form: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowKind {
    Tumble,
    Hop,
    Session,
    Cumulate,
}

impl WindowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowKind::Tumble => "TUMBLE",
            WindowKind::Hop => "HOP",
            WindowKind::Session => "SESSION",
            WindowKind::Cumulate => "CUMULATE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ExprKind {
    /// `a` or `t.a`.
    Identifier(Vec<Ident>),
    Literal(Literal),
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Unary {
        op: UnaryOp,
        expr: Box<Expr>,
    },
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    /// `expr IS [NOT] TRUE|FALSE`.
    IsBool {
        expr: Box<Expr>,
        value: bool,
        negated: bool,
    },
    /// `expr [NOT] IN (list)`.
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    /// `expr [NOT] BETWEEN low AND high`.
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    /// `expr [NOT] LIKE|ILIKE pattern`.
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        negated: bool,
        case_insensitive: bool,
    },
    /// `name(args)`, `name(*)`, `name(DISTINCT args)`, with optional
    /// `FILTER (WHERE ..)` and `OVER (..)`.
    Function(Function),
    /// `EXTRACT(field FROM expr)`.
    Extract {
        field: Ident,
        expr: Box<Expr>,
    },
    Case {
        operand: Option<Box<Expr>>,
        branches: Vec<(Expr, Expr)>,
        else_result: Option<Box<Expr>>,
    },
    /// `CAST(expr AS type)`, or `expr::type` when `shorthand`.
    Cast {
        expr: Box<Expr>,
        data_type: DataType,
        shorthand: bool,
    },
    /// `( expr )`, kept so that printing round-trips.
    Nested(Box<Expr>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Function {
    pub name: Ident,
    pub args: Vec<Expr>,
    pub star: bool,
    pub distinct: bool,
    pub filter: Option<Box<Expr>>,
    pub over: Option<WindowSpec>,
}

/// `OVER (PARTITION BY .. ORDER BY .. [frame])`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowSpec {
    pub partition_by: Vec<Expr>,
    pub order_by: Vec<OrderByExpr>,
    pub frame: Option<WindowFrame>,
}

/// `ROWS|RANGE BETWEEN start AND end` (or just `start`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowFrame {
    pub rows: bool,
    pub start: FrameBound,
    pub end: Option<FrameBound>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FrameBound {
    CurrentRow,
    /// `n PRECEDING` / `INTERVAL .. PRECEDING`; `None` is UNBOUNDED.
    Preceding(Option<Box<Expr>>),
    Following(Option<Box<Expr>>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Literal {
    /// A numeric literal as written (`42`, `0.908`, `1e3`).
    Number(String),
    String(String),
    Boolean(bool),
    Null,
    /// `INTERVAL '10' SECOND` or `INTERVAL '10 seconds'`.
    Interval {
        value: String,
        unit: Option<IntervalUnit>,
    },
    /// `TIMESTAMP '2024-01-01 00:00:00'`.
    Timestamp(String),
    /// `DATE '2024-01-01'`.
    Date(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntervalUnit {
    Millisecond,
    Second,
    Minute,
    Hour,
    Day,
}

impl IntervalUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            IntervalUnit::Millisecond => "MILLISECOND",
            IntervalUnit::Second => "SECOND",
            IntervalUnit::Minute => "MINUTE",
            IntervalUnit::Hour => "HOUR",
            IntervalUnit::Day => "DAY",
        }
    }

    pub fn millis(self) -> i64 {
        match self {
            IntervalUnit::Millisecond => 1,
            IntervalUnit::Second => 1_000,
            IntervalUnit::Minute => 60_000,
            IntervalUnit::Hour => 3_600_000,
            IntervalUnit::Day => 86_400_000,
        }
    }

    /// Parses a unit name, singular or plural, any case.
    pub fn parse(word: &str) -> Option<Self> {
        let w = word.to_ascii_lowercase();
        let w = w.strip_suffix('s').unwrap_or(&w);
        Some(match w {
            "millisecond" | "ms" => IntervalUnit::Millisecond,
            "second" | "sec" => IntervalUnit::Second,
            "minute" | "min" => IntervalUnit::Minute,
            "hour" => IntervalUnit::Hour,
            "day" => IntervalUnit::Day,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
    Plus,
    Minus,
    Multiply,
    Divide,
    Modulo,
    Concat,
}

impl BinaryOp {
    pub fn as_str(self) -> &'static str {
        match self {
            BinaryOp::Or => "OR",
            BinaryOp::And => "AND",
            BinaryOp::Eq => "=",
            BinaryOp::NotEq => "<>",
            BinaryOp::Lt => "<",
            BinaryOp::LtEq => "<=",
            BinaryOp::Gt => ">",
            BinaryOp::GtEq => ">=",
            BinaryOp::Plus => "+",
            BinaryOp::Minus => "-",
            BinaryOp::Multiply => "*",
            BinaryOp::Divide => "/",
            BinaryOp::Modulo => "%",
            BinaryOp::Concat => "||",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnaryOp {
    Not,
    Minus,
    Plus,
}

impl Expr {
    /// The direct sub-expressions, in source order (for visitors).
    /// The direct subexpressions, for rewriting in place.
    pub fn children_mut(&mut self) -> Vec<&mut Expr> {
        match &mut self.kind {
            ExprKind::Identifier(_) | ExprKind::Literal(_) => vec![],
            ExprKind::Binary { left, right, .. } => vec![left, right],
            ExprKind::Unary { expr, .. }
            | ExprKind::IsNull { expr, .. }
            | ExprKind::IsBool { expr, .. }
            | ExprKind::Cast { expr, .. }
            | ExprKind::Extract { expr, .. }
            | ExprKind::Nested(expr) => vec![expr],
            ExprKind::InList { expr, list, .. } => std::iter::once(expr.as_mut())
                .chain(list.iter_mut())
                .collect(),
            ExprKind::Between {
                expr, low, high, ..
            } => vec![expr, low, high],
            ExprKind::Like { expr, pattern, .. } => vec![expr, pattern],
            ExprKind::Function(f) => {
                let mut out: Vec<&mut Expr> = f.args.iter_mut().collect();
                out.extend(f.filter.as_deref_mut());
                if let Some(w) = &mut f.over {
                    out.extend(w.partition_by.iter_mut());
                    out.extend(w.order_by.iter_mut().map(|o| &mut o.expr));
                }
                out
            }
            ExprKind::Case {
                operand,
                branches,
                else_result,
            } => {
                let mut out: Vec<&mut Expr> = operand.iter_mut().map(|o| o.as_mut()).collect();
                for (w, t) in branches {
                    out.push(w);
                    out.push(t);
                }
                out.extend(else_result.as_deref_mut());
                out
            }
        }
    }

    pub fn children(&self) -> Vec<&Expr> {
        match &self.kind {
            ExprKind::Identifier(_) | ExprKind::Literal(_) => vec![],
            ExprKind::Binary { left, right, .. } => vec![left, right],
            ExprKind::Unary { expr, .. }
            | ExprKind::IsNull { expr, .. }
            | ExprKind::IsBool { expr, .. }
            | ExprKind::Cast { expr, .. }
            | ExprKind::Extract { expr, .. }
            | ExprKind::Nested(expr) => vec![expr],
            ExprKind::InList { expr, list, .. } => {
                std::iter::once(expr.as_ref()).chain(list).collect()
            }
            ExprKind::Between {
                expr, low, high, ..
            } => vec![expr, low, high],
            ExprKind::Like { expr, pattern, .. } => vec![expr, pattern],
            ExprKind::Function(f) => {
                let mut out: Vec<&Expr> = f.args.iter().collect();
                out.extend(f.filter.as_deref());
                if let Some(w) = &f.over {
                    out.extend(&w.partition_by);
                    out.extend(w.order_by.iter().map(|o| &o.expr));
                }
                out
            }
            ExprKind::Case {
                operand,
                branches,
                else_result,
            } => {
                let mut out: Vec<&Expr> = operand.iter().map(|o| o.as_ref()).collect();
                for (w, t) in branches {
                    out.push(w);
                    out.push(t);
                }
                out.extend(else_result.as_deref());
                out
            }
        }
    }
}
