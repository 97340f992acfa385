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
    Insert(Insert),
    Query(Query),
    Explain(Box<Statement>),
}

/// `CREATE SOURCE name (columns [, WATERMARK FOR col AS expr]) WITH (options)`
/// (also spelled `CREATE TABLE`, as in Flink).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateSource {
    pub name: Ident,
    pub columns: Vec<ColumnDef>,
    pub watermark: Option<Watermark>,
    pub options: Vec<SqlOption>,
}

/// `CREATE SINK name [(columns)] WITH (options) [AS query]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateSink {
    pub name: Ident,
    pub columns: Option<Vec<ColumnDef>>,
    pub options: Vec<SqlOption>,
    pub query: Option<Query>,
}

/// `INSERT INTO sink query`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insert {
    pub target: Ident,
    pub query: Query,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnDef {
    pub name: Ident,
    pub data_type: DataType,
    pub span: Span,
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
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}

/// `SELECT items FROM from [WHERE ..] [GROUP BY ..] [HAVING ..]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    pub projection: Vec<SelectItem>,
    pub from: TableRef,
    pub selection: Option<Expr>,
    pub group_by: Vec<Expr>,
    pub having: Option<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SelectItem {
    /// `*`
    Wildcard(Span),
    Expr {
        expr: Expr,
        alias: Option<Ident>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableRef {
    pub kind: TableRefKind,
    pub alias: Option<Ident>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TableRefKind {
    Named(Ident),
    /// A window table-valued function, in Flink's form
    /// `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size))` or the short form
    /// `TUMBLE(t, ts, size)`.
    Window(WindowTvf),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowTvf {
    pub kind: WindowKind,
    pub table: Ident,
    pub time_column: Ident,
    /// The interval arguments in order (`size` for TUMBLE).
    pub args: Vec<Expr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WindowKind {
    Tumble,
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
    /// `name(args)`, `name(*)`, `name(DISTINCT args)`.
    Function {
        name: Ident,
        args: Vec<Expr>,
        star: bool,
        distinct: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        branches: Vec<(Expr, Expr)>,
        else_result: Option<Box<Expr>>,
    },
    Cast {
        expr: Box<Expr>,
        data_type: DataType,
    },
    /// `( expr )`, kept so that printing round-trips.
    Nested(Box<Expr>),
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
