//! The pretty-printer: `Display` for every AST node, printing SQL that
//! parses back to the same tree (spans aside).
//!
//! Parentheses are printed exactly where the tree has [`ExprKind::Nested`];
//! a tree built by the parser always has them where precedence needs them.

use std::fmt::{self, Display, Formatter, Write as _};

use crate::ast::*;

fn list<T: Display>(items: &[T], sep: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

fn quote_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Display for Ident {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if self.quoted {
            write!(f, "\"{}\"", self.value.replace('"', "\"\""))
        } else {
            f.write_str(&self.value)
        }
    }
}

impl Display for DataType {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.kind {
            DataTypeKind::Boolean => f.write_str("BOOLEAN"),
            DataTypeKind::TinyInt => f.write_str("TINYINT"),
            DataTypeKind::SmallInt => f.write_str("SMALLINT"),
            DataTypeKind::Int => f.write_str("INT"),
            DataTypeKind::BigInt => f.write_str("BIGINT"),
            DataTypeKind::Float => f.write_str("FLOAT"),
            DataTypeKind::Double => f.write_str("DOUBLE"),
            DataTypeKind::Decimal { precision, scale } => {
                write!(f, "DECIMAL({precision}, {scale})")
            }
            DataTypeKind::Varchar => f.write_str("VARCHAR"),
            DataTypeKind::Bytes => f.write_str("BYTES"),
            DataTypeKind::Date => f.write_str("DATE"),
            DataTypeKind::Timestamp { precision: None } => f.write_str("TIMESTAMP"),
            DataTypeKind::Timestamp { precision: Some(p) } => write!(f, "TIMESTAMP({p})"),
            DataTypeKind::Row(fields) => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|r| format!("{} {}", r.name, r.data_type))
                    .collect();
                write!(f, "ROW<{}>", fields.join(", "))
            }
            DataTypeKind::Array(t) => write!(f, "ARRAY<{t}>"),
            DataTypeKind::Map(k, v) => write!(f, "MAP<{k}, {v}>"),
        }
    }
}

impl Display for Literal {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Number(n) => f.write_str(n),
            Literal::String(s) => f.write_str(&quote_string(s)),
            Literal::Boolean(b) => f.write_str(if *b { "TRUE" } else { "FALSE" }),
            Literal::Null => f.write_str("NULL"),
            Literal::Interval {
                value,
                unit: Some(u),
            } => write!(f, "INTERVAL {} {}", quote_string(value), u.as_str()),
            Literal::Interval { value, unit: None } => {
                write!(f, "INTERVAL {}", quote_string(value))
            }
            Literal::Timestamp(s) => write!(f, "TIMESTAMP {}", quote_string(s)),
            Literal::Date(s) => write!(f, "DATE {}", quote_string(s)),
        }
    }
}

impl Display for OrderByExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.expr)?;
        match self.asc {
            Some(true) => f.write_str(" ASC"),
            Some(false) => f.write_str(" DESC"),
            None => Ok(()),
        }
    }
}

impl Display for FrameBound {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            FrameBound::CurrentRow => f.write_str("CURRENT ROW"),
            FrameBound::Preceding(None) => f.write_str("UNBOUNDED PRECEDING"),
            FrameBound::Following(None) => f.write_str("UNBOUNDED FOLLOWING"),
            FrameBound::Preceding(Some(e)) => write!(f, "{e} PRECEDING"),
            FrameBound::Following(Some(e)) => write!(f, "{e} FOLLOWING"),
        }
    }
}

impl Display for WindowSpec {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.partition_by.is_empty() {
            parts.push(format!("PARTITION BY {}", list(&self.partition_by, ", ")));
        }
        if !self.order_by.is_empty() {
            parts.push(format!("ORDER BY {}", list(&self.order_by, ", ")));
        }
        if let Some(frame) = &self.frame {
            let unit = if frame.rows { "ROWS" } else { "RANGE" };
            parts.push(match &frame.end {
                Some(end) => format!("{unit} BETWEEN {} AND {end}", frame.start),
                None => format!("{unit} {}", frame.start),
            });
        }
        f.write_str(&parts.join(" "))
    }
}

impl Display for Function {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}(", self.name)?;
        if self.distinct {
            f.write_str("DISTINCT ")?;
        }
        if self.star {
            f.write_str("*")?;
        }
        write!(f, "{})", list(&self.args, ", "))?;
        if let Some(filter) = &self.filter {
            write!(f, " FILTER (WHERE {filter})")?;
        }
        if let Some(over) = &self.over {
            write!(f, " OVER ({over})")?;
        }
        Ok(())
    }
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let not = |negated: bool| if negated { "NOT " } else { "" };
        match &self.kind {
            ExprKind::Identifier(parts) => f.write_str(&list(parts, ".")),
            ExprKind::Literal(l) => write!(f, "{l}"),
            ExprKind::Binary { op, left, right } => write!(f, "{left} {} {right}", op.as_str()),
            ExprKind::Unary {
                op: UnaryOp::Not,
                expr,
            } => write!(f, "NOT {expr}"),
            ExprKind::Unary { op, expr } => {
                let sign = if *op == UnaryOp::Minus { "-" } else { "+" };
                let inner = expr.to_string();
                // `--` would start a comment.
                let space = if inner.starts_with(['-', '+']) {
                    " "
                } else {
                    ""
                };
                write!(f, "{sign}{space}{inner}")
            }
            ExprKind::IsNull { expr, negated } => write!(f, "{expr} IS {}NULL", not(*negated)),
            ExprKind::IsBool {
                expr,
                value,
                negated,
            } => {
                write!(
                    f,
                    "{expr} IS {}{}",
                    not(*negated),
                    if *value { "TRUE" } else { "FALSE" }
                )
            }
            ExprKind::InList {
                expr,
                list: items,
                negated,
            } => {
                write!(f, "{expr} {}IN ({})", not(*negated), list(items, ", "))
            }
            ExprKind::Between {
                expr,
                low,
                high,
                negated,
            } => {
                write!(f, "{expr} {}BETWEEN {low} AND {high}", not(*negated))
            }
            ExprKind::Like {
                expr,
                pattern,
                negated,
                case_insensitive,
            } => {
                let op = if *case_insensitive { "ILIKE" } else { "LIKE" };
                write!(f, "{expr} {}{op} {pattern}", not(*negated))
            }
            ExprKind::Function(func) => write!(f, "{func}"),
            ExprKind::Extract { field, expr } => write!(f, "EXTRACT({field} FROM {expr})"),
            ExprKind::Case {
                operand,
                branches,
                else_result,
            } => {
                f.write_str("CASE")?;
                if let Some(o) = operand {
                    write!(f, " {o}")?;
                }
                for (w, t) in branches {
                    write!(f, " WHEN {w} THEN {t}")?;
                }
                if let Some(e) = else_result {
                    write!(f, " ELSE {e}")?;
                }
                f.write_str(" END")
            }
            ExprKind::Cast {
                expr,
                data_type,
                shorthand: true,
            } => write!(f, "{expr}::{data_type}"),
            ExprKind::Cast {
                expr,
                data_type,
                shorthand: false,
            } => write!(f, "CAST({expr} AS {data_type})"),
            ExprKind::Nested(inner) => write!(f, "({inner})"),
        }
    }
}

impl Display for SelectItem {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            SelectItem::Wildcard { .. } => f.write_str("*"),
            SelectItem::QualifiedWildcard { table, .. } => write!(f, "{table}.*"),
            SelectItem::Expr {
                expr,
                alias: Some(a),
            } => write!(f, "{expr} AS {a}"),
            SelectItem::Expr { expr, alias: None } => write!(f, "{expr}"),
        }
    }
}

impl Display for TableAlias {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if !self.columns.is_empty() {
            write!(f, " ({})", list(&self.columns, ", "))?;
        }
        Ok(())
    }
}

impl Display for TableRef {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.kind {
            TableRefKind::Named(n) => write!(f, "{n}")?,
            TableRefKind::Subquery(q) => write!(f, "({q})")?,
            TableRefKind::Window(w) => {
                let args = list(&w.args, ", ");
                if w.flink_form {
                    let mut table = w.table.to_string();
                    if !w.partition_by.is_empty() {
                        let _ = write!(table, " PARTITION BY {}", list(&w.partition_by, ", "));
                    }
                    write!(
                        f,
                        "TABLE({}(TABLE {table}, DESCRIPTOR({}), {args}))",
                        w.kind.as_str(),
                        w.time_column
                    )?;
                } else {
                    write!(
                        f,
                        "{}({}, {}, {args})",
                        w.kind.as_str(),
                        w.table,
                        w.time_column
                    )?;
                }
            }
            TableRefKind::Join(j) => {
                write!(f, "{} {} {}", j.left, j.kind.as_str(), j.right)?;
                match &j.constraint {
                    JoinConstraint::On(e) => write!(f, " ON {e}")?,
                    JoinConstraint::Using(cols) => write!(f, " USING ({})", list(cols, ", "))?,
                    JoinConstraint::None => {}
                }
            }
        }
        if let Some(t) = &self.for_system_time {
            write!(f, " FOR SYSTEM_TIME AS OF {t}")?;
        }
        if let Some(a) = &self.alias {
            write!(f, " AS {a}")?;
        }
        Ok(())
    }
}

impl Display for Select {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("SELECT ")?;
        if self.distinct {
            f.write_str("DISTINCT ")?;
        }
        write!(
            f,
            "{} FROM {}",
            list(&self.projection, ", "),
            list(&self.from, ", ")
        )?;
        if let Some(w) = &self.selection {
            write!(f, " WHERE {w}")?;
        }
        if !self.group_by.is_empty() {
            write!(f, " GROUP BY {}", list(&self.group_by, ", "))?;
        }
        if let Some(h) = &self.having {
            write!(f, " HAVING {h}")?;
        }
        Ok(())
    }
}

impl Display for SetExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            SetExpr::Select(s) => write!(f, "{s}"),
            SetExpr::Union { left, right, all } => {
                let all = if *all { " ALL" } else { "" };
                write!(f, "{left} UNION{all} {right}")
            }
            SetExpr::Values(v) => {
                let rows: Vec<String> = v
                    .rows
                    .iter()
                    .map(|r| format!("({})", list(r, ", ")))
                    .collect();
                write!(f, "VALUES {}", rows.join(", "))
            }
            SetExpr::Query(q) => write!(f, "({q})"),
        }
    }
}

impl Display for Query {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if !self.with.is_empty() {
            let ctes: Vec<String> = self
                .with
                .iter()
                .map(|c| format!("{} AS ({})", c.alias, c.query))
                .collect();
            write!(f, "WITH {} ", ctes.join(", "))?;
        }
        write!(f, "{}", self.body)?;
        if !self.order_by.is_empty() {
            write!(f, " ORDER BY {}", list(&self.order_by, ", "))?;
        }
        if let Some(l) = &self.limit {
            write!(f, " LIMIT {l}")?;
        }
        Ok(())
    }
}

impl Display for SqlOption {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} = {}",
            quote_string(&self.key),
            quote_string(&self.value)
        )
    }
}

fn columns(cols: &[ColumnDef]) -> String {
    cols.iter()
        .map(|c| match &c.kind {
            ColumnKind::Physical(t) => format!("{} {t}", c.name),
            ColumnKind::Computed(e) => format!("{} AS {e}", c.name),
            ColumnKind::Metadata {
                data_type,
                key,
                is_virtual,
            } => format!(
                "{} {data_type} METADATA{}{}",
                c.name,
                key.as_ref().map_or(String::new(), |k| format!(
                    " FROM '{}'",
                    k.replace('\'', "''")
                )),
                if *is_virtual { " VIRTUAL" } else { "" }
            ),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn insert(i: &Insert) -> String {
    let mut out = format!("INSERT INTO {}", i.target);
    if !i.columns.is_empty() {
        out.push_str(&format!(" ({})", list(&i.columns, ", ")));
    }
    format!("{out} {}", i.query)
}

impl Display for Statement {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match &self.kind {
            StatementKind::CreateSource(s) => {
                let mut parts = vec![columns(&s.columns)];
                if !s.primary_key.is_empty() {
                    parts.push(format!(
                        "PRIMARY KEY ({}) NOT ENFORCED",
                        list(&s.primary_key, ", ")
                    ));
                }
                if let Some(w) = &s.watermark {
                    parts.push(format!("WATERMARK FOR {} AS {}", w.column, w.expr));
                }
                let parts: Vec<String> = parts.into_iter().filter(|p| !p.is_empty()).collect();
                let what = if s.table { "TABLE" } else { "SOURCE" };
                let if_not_exists = if s.if_not_exists {
                    "IF NOT EXISTS "
                } else {
                    ""
                };
                write!(
                    f,
                    "CREATE {what} {if_not_exists}{} ({})",
                    s.name,
                    parts.join(", ")
                )?;
                if !s.partitioned_by.is_empty() {
                    write!(f, " PARTITIONED BY ({})", list(&s.partitioned_by, ", "))?;
                }
                write!(f, " WITH ({})", list(&s.options, ", "))
            }
            StatementKind::CreateSink(s) => {
                write!(f, "CREATE SINK {}", s.name)?;
                if let Some(cols) = &s.columns {
                    write!(f, " ({})", columns(cols))?;
                }
                if !s.partitioned_by.is_empty() {
                    write!(f, " PARTITIONED BY ({})", list(&s.partitioned_by, ", "))?;
                }
                write!(f, " WITH ({})", list(&s.options, ", "))?;
                if let Some(q) = &s.query {
                    write!(f, " AS {q}")?;
                }
                Ok(())
            }
            StatementKind::CreateView(v) => {
                let m = if v.materialized { "MATERIALIZED " } else { "" };
                let if_not_exists = if v.if_not_exists {
                    "IF NOT EXISTS "
                } else {
                    ""
                };
                write!(f, "CREATE {m}VIEW {if_not_exists}{}", v.name)?;
                if !v.columns.is_empty() {
                    write!(f, " ({})", list(&v.columns, ", "))?;
                }
                write!(f, " AS {}", v.query)
            }
            StatementKind::Insert(i) => f.write_str(&insert(i)),
            StatementKind::StatementSet(inserts) => {
                f.write_str("EXECUTE STATEMENT SET BEGIN ")?;
                for i in inserts {
                    write!(f, "{}; ", insert(i))?;
                }
                f.write_str("END")
            }
            StatementKind::Query(q) => write!(f, "{q}"),
            StatementKind::Explain(s) => write!(f, "EXPLAIN {s}"),
            StatementKind::Drop(d) => {
                let if_exists = if d.if_exists { "IF EXISTS " } else { "" };
                write!(f, "DROP {} {if_exists}{}", d.kind.as_str(), d.name)
            }
            StatementKind::Show(what) => write!(f, "SHOW {}", what.as_str()),
            StatementKind::Describe(name) => write!(f, "DESCRIBE {name}"),
            StatementKind::DescribeConnector(name) => write!(f, "DESCRIBE CONNECTOR {name}"),
            StatementKind::Set(o) => write!(f, "SET {o}"),
            StatementKind::CreateFunction(c) => {
                write!(
                    f,
                    "CREATE FUNCTION {} AS {}",
                    c.name,
                    quote_string(&c.class)
                )
            }
        }
    }
}
