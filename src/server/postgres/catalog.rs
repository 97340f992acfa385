//! The Postgres catalog as clients query it: `pg_catalog` and
//! `information_schema` tables built from Eddy's catalog for each query,
//! the `pg_catalog` functions psql's `\d` calls, and the rewrites that
//! take Postgres's own spellings (`OPERATOR(pg_catalog.~)`, `COLLATE`,
//! `::regclass`) to DataFusion's.
//!
//! Sources and sinks are tables (relkind `r`), `CREATE VIEW`s views
//! (`v`), materialized views `m`; all live in schema `public`. Object ids
//! are given in name order from [`FIRST_OID`] and hold for one query.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Int16Array, Int32Array, Int64Array, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemorySchemaProvider, SchemaProvider};
use datafusion::common::{Result, ScalarValue, cast::as_int64_array};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{
    self, BinaryOperator, Expr, ObjectName, ObjectNamePart, VisitMut, VisitorMut,
};
use eddy_planner::{CatalogRelation, RelationKind};
use pgwire::api::Type;

use super::types::pg_type;
use crate::server::batch::DATABASE;

/// The first object id of a relation, as Postgres's first user object.
const FIRST_OID: i64 = 16384;
const PG_CATALOG_OID: i64 = 11;
const PUBLIC_OID: i64 = 2200;
const INFORMATION_SCHEMA_OID: i64 = 13000;
/// The one role, `eddy`.
const OWNER_OID: i64 = 10;

/// Whether `schema` is one of the catalog's schemas.
pub(crate) fn is_schema(schema: &str) -> bool {
    schema == "pg_catalog" || schema == "information_schema"
}

/// Whether an unqualified `table` is a `pg_catalog` table (Postgres
/// searches `pg_catalog` first).
pub(crate) fn is_table(table: &str) -> bool {
    BUILT_TABLES.contains(&table) || is_empty_table(table)
}

fn is_empty_table(table: &str) -> bool {
    EMPTY_TABLES.iter().any(|(t, _)| *t == table)
}

/// The `pg_catalog` tables built from the catalog.
const BUILT_TABLES: &[&str] = &[
    "pg_namespace",
    "pg_class",
    "pg_attribute",
    "pg_type",
    "pg_database",
    "pg_roles",
    "pg_user",
    "pg_tables",
    "pg_views",
    "pg_matviews",
    "pg_settings",
];

/// The `pg_catalog` tables that are always empty in Eddy (no indexes,
/// constraints, triggers, rules, policies, publications...), and the
/// columns clients read of them.
const EMPTY_TABLES: &[(&str, &[&str])] = &[
    ("pg_am", &["oid", "amname", "amhandler", "amtype"]),
    ("pg_attrdef", &["oid", "adrelid", "adnum", "adbin"]),
    (
        "pg_collation",
        &["oid", "collname", "collnamespace", "collprovider"],
    ),
    (
        "pg_index",
        &[
            "indexrelid",
            "indrelid",
            "indisprimary",
            "indisunique",
            "indkey",
        ],
    ),
    (
        "pg_inherits",
        &["inhrelid", "inhparent", "inhseqno", "inhdetachpending"],
    ),
    (
        "pg_constraint",
        &[
            "oid",
            "conname",
            "contype",
            "conrelid",
            "confrelid",
            "conkey",
        ],
    ),
    (
        "pg_trigger",
        &["oid", "tgrelid", "tgname", "tgenabled", "tgisinternal"],
    ),
    (
        "pg_policy",
        &[
            "oid",
            "polname",
            "polrelid",
            "polcmd",
            "polpermissive",
            "polroles",
            "polqual",
            "polwithcheck",
        ],
    ),
    (
        "pg_statistic_ext",
        &["oid", "stxrelid", "stxname", "stxnamespace", "stxkind"],
    ),
    ("pg_publication", &["oid", "pubname", "puballtables"]),
    (
        "pg_publication_rel",
        &["oid", "prpubid", "prrelid", "prqual", "prattrs"],
    ),
    ("pg_publication_namespace", &["oid", "pnpubid", "pnnspid"]),
    ("pg_rewrite", &["oid", "rulename", "ev_class", "ev_type"]),
    (
        "pg_description",
        &["objoid", "classoid", "objsubid", "description"],
    ),
    ("pg_foreign_table", &["ftrelid", "ftserver", "ftoptions"]),
    ("pg_foreign_server", &["oid", "srvname", "srvoptions"]),
    ("pg_partitioned_table", &["partrelid", "partstrat"]),
    (
        "pg_proc",
        &["oid", "proname", "pronamespace", "prokind", "prorettype"],
    ),
    ("pg_tablespace", &["oid", "spcname"]),
    (
        "pg_extension",
        &["oid", "extname", "extversion", "extnamespace"],
    ),
    ("pg_sequence", &["seqrelid"]),
    ("pg_enum", &["oid", "enumtypid", "enumlabel"]),
    ("pg_range", &["rngtypid", "rngsubtype"]),
];

/// Registers `pg_catalog` and `information_schema` over `relations`.
pub(crate) fn register_tables(ctx: &SessionContext, relations: &[CatalogRelation]) -> Result<()> {
    let pg = Arc::new(MemorySchemaProvider::new());
    let tables = PgTables::new(relations);
    for (name, batch) in tables.all()? {
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        pg.register_table(name.to_string(), Arc::new(table))?;
    }
    let info = Arc::new(MemorySchemaProvider::new());
    for (name, batch) in tables.information_schema()? {
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
        info.register_table(name.to_string(), Arc::new(table))?;
    }
    let catalog = ctx
        .catalog(DATABASE)
        .expect("the session's default catalog");
    catalog.register_schema("pg_catalog", pg)?;
    catalog.register_schema("information_schema", info)?;
    Ok(())
}

/// Registers the `pg_catalog` functions (`version()`, `format_type`...).
pub(crate) fn register_functions(ctx: &SessionContext) {
    for f in functions() {
        ctx.register_udf(ScalarUDF::new_from_impl(f));
    }
}

/// Builds the tables from one list of relations.
struct PgTables<'a> {
    relations: &'a [CatalogRelation],
}

type Columns = Vec<(&'static str, ArrayRef)>;

fn batch(columns: Columns) -> Result<RecordBatch> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(name, a)| Field::new(*name, a.data_type().clone(), true))
        .collect();
    let arrays = columns.into_iter().map(|(_, a)| a).collect();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

fn strings<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn ints(values: impl IntoIterator<Item = i64>) -> ArrayRef {
    Arc::new(Int64Array::from_iter_values(values))
}

fn smallints(values: impl IntoIterator<Item = i16>) -> ArrayRef {
    Arc::new(Int16Array::from_iter_values(values))
}

fn bools(values: impl IntoIterator<Item = bool>) -> ArrayRef {
    Arc::new(BooleanArray::from_iter(values.into_iter().map(Some)))
}

fn nulls(n: usize) -> ArrayRef {
    Arc::new(StringArray::from(vec![None::<&str>; n]))
}

/// `n` copies of a column value.
fn same<T: Clone>(n: usize, v: T) -> std::iter::RepeatN<T> {
    std::iter::repeat_n(v, n)
}

/// An always empty table with these columns (all text but the ids).
fn empty(columns: &[&'static str]) -> Result<RecordBatch> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|c| {
            let id = *c == "oid" || c.ends_with("relid") || c.ends_with("oid");
            let t = if id { DataType::Int64 } else { DataType::Utf8 };
            Field::new(*c, t, true)
        })
        .collect();
    Ok(RecordBatch::new_empty(Arc::new(Schema::new(fields))))
}

/// The Postgres types Eddy's columns are sent as.
const TYPES: &[Type] = &[
    Type::BOOL,
    Type::INT2,
    Type::INT4,
    Type::INT8,
    Type::FLOAT4,
    Type::FLOAT8,
    Type::TEXT,
    Type::BYTEA,
    Type::DATE,
    Type::TIMESTAMP,
    Type::TIMESTAMPTZ,
];

/// How `format_type` and `information_schema` spell a type.
fn type_name(oid: i64) -> Option<&'static str> {
    Some(match u32::try_from(oid).ok()? {
        16 => "boolean",
        21 => "smallint",
        23 => "integer",
        20 => "bigint",
        700 => "real",
        701 => "double precision",
        25 => "text",
        17 => "bytea",
        1082 => "date",
        1114 => "timestamp without time zone",
        1184 => "timestamp with time zone",
        _ => return None,
    })
}

fn type_len(t: &Type) -> i16 {
    match *t {
        Type::BOOL => 1,
        Type::INT2 => 2,
        Type::INT4 | Type::FLOAT4 | Type::DATE => 4,
        Type::INT8 | Type::FLOAT8 | Type::TIMESTAMP | Type::TIMESTAMPTZ => 8,
        _ => -1,
    }
}

impl<'a> PgTables<'a> {
    fn new(relations: &'a [CatalogRelation]) -> Self {
        Self { relations }
    }

    fn oids(&self) -> impl Iterator<Item = i64> + '_ {
        (0..self.relations.len()).map(|i| FIRST_OID + i as i64)
    }

    fn relkind(kind: RelationKind) -> &'static str {
        match kind {
            RelationKind::Table => "r",
            RelationKind::View => "v",
            RelationKind::MaterializedView => "m",
        }
    }

    fn all(&self) -> Result<Vec<(&'static str, RecordBatch)>> {
        let mut tables = vec![
            ("pg_namespace", self.namespace()?),
            ("pg_class", self.class()?),
            ("pg_attribute", self.attribute()?),
            ("pg_type", self.types()?),
            ("pg_database", self.database()?),
            ("pg_roles", self.roles("rolname")?),
            ("pg_user", self.roles("usename")?),
            (
                "pg_tables",
                self.listing(RelationKind::Table, "tablename", "tableowner")?,
            ),
            (
                "pg_views",
                self.listing(RelationKind::View, "viewname", "viewowner")?,
            ),
            (
                "pg_matviews",
                self.listing(
                    RelationKind::MaterializedView,
                    "matviewname",
                    "matviewowner",
                )?,
            ),
            ("pg_settings", self.settings()?),
        ];
        for (name, columns) in EMPTY_TABLES {
            tables.push((name, empty(columns)?));
        }
        Ok(tables)
    }

    fn namespace(&self) -> Result<RecordBatch> {
        batch(vec![
            (
                "oid",
                ints([PG_CATALOG_OID, PUBLIC_OID, INFORMATION_SCHEMA_OID]),
            ),
            (
                "nspname",
                strings(["pg_catalog", "public", "information_schema"]),
            ),
            ("nspowner", ints(same(3, OWNER_OID))),
            ("nspacl", nulls(3)),
        ])
    }

    fn class(&self) -> Result<RecordBatch> {
        let n = self.relations.len();
        let r = self.relations;
        batch(vec![
            ("oid", ints(self.oids())),
            ("relname", strings(r.iter().map(|r| &r.name))),
            ("relnamespace", ints(same(n, PUBLIC_OID))),
            ("reltype", ints(same(n, 0))),
            ("reloftype", ints(same(n, 0))),
            ("relowner", ints(same(n, OWNER_OID))),
            ("relam", ints(same(n, 0))),
            ("relfilenode", ints(same(n, 0))),
            ("reltablespace", ints(same(n, 0))),
            (
                "relpages",
                Arc::new(Int32Array::from_iter_values(same(n, 0))),
            ),
            (
                "reltuples",
                Arc::new(Float32Array::from_iter_values(same(n, -1.0))),
            ),
            ("reltoastrelid", ints(same(n, 0))),
            ("relhasindex", bools(same(n, false))),
            ("relisshared", bools(same(n, false))),
            ("relpersistence", strings(same(n, "p"))),
            ("relkind", strings(r.iter().map(|r| Self::relkind(r.kind)))),
            (
                "relnatts",
                smallints(r.iter().map(|r| r.schema.fields().len() as i16)),
            ),
            ("relchecks", smallints(same(n, 0))),
            ("relhasrules", bools(same(n, false))),
            ("relhastriggers", bools(same(n, false))),
            ("relhassubclass", bools(same(n, false))),
            ("relrowsecurity", bools(same(n, false))),
            ("relforcerowsecurity", bools(same(n, false))),
            ("relispopulated", bools(same(n, true))),
            ("relreplident", strings(same(n, "d"))),
            ("relispartition", bools(same(n, false))),
            ("relacl", nulls(n)),
            ("reloptions", nulls(n)),
            ("relpartbound", nulls(n)),
        ])
    }

    /// Each relation's columns, in order.
    fn columns(&self) -> impl Iterator<Item = (i64, &CatalogRelation, usize, &Field)> + '_ {
        self.oids().zip(self.relations).flat_map(|(oid, r)| {
            r.schema
                .fields()
                .iter()
                .enumerate()
                .map(move |(i, f)| (oid, r, i + 1, f.as_ref()))
        })
    }

    fn attribute(&self) -> Result<RecordBatch> {
        let c: Vec<_> = self.columns().collect();
        let n = c.len();
        let t = |f: &Field| pg_type(f.data_type());
        batch(vec![
            ("attrelid", ints(c.iter().map(|c| c.0))),
            ("attname", strings(c.iter().map(|c| c.3.name()))),
            ("atttypid", ints(c.iter().map(|c| i64::from(t(c.3).oid())))),
            ("attstattarget", ints(same(n, -1))),
            ("attlen", smallints(c.iter().map(|c| type_len(&t(c.3))))),
            ("attnum", smallints(c.iter().map(|c| c.2 as i16))),
            ("attndims", ints(same(n, 0))),
            (
                "atttypmod",
                Arc::new(Int32Array::from_iter_values(same(n, -1))),
            ),
            ("attnotnull", bools(c.iter().map(|c| !c.3.is_nullable()))),
            ("atthasdef", bools(same(n, false))),
            ("atthasmissing", bools(same(n, false))),
            ("attidentity", strings(same(n, ""))),
            ("attgenerated", strings(same(n, ""))),
            ("attisdropped", bools(same(n, false))),
            ("attislocal", bools(same(n, true))),
            ("attinhcount", ints(same(n, 0))),
            ("attcollation", ints(same(n, 0))),
            ("attstorage", strings(same(n, "p"))),
            ("attcompression", strings(same(n, ""))),
            ("attacl", nulls(n)),
            ("attoptions", nulls(n)),
            ("attfdwoptions", nulls(n)),
        ])
    }

    fn types(&self) -> Result<RecordBatch> {
        let n = TYPES.len();
        batch(vec![
            ("oid", ints(TYPES.iter().map(|t| i64::from(t.oid())))),
            ("typname", strings(TYPES.iter().map(|t| t.name()))),
            ("typnamespace", ints(same(n, PG_CATALOG_OID))),
            ("typowner", ints(same(n, OWNER_OID))),
            ("typlen", smallints(TYPES.iter().map(type_len))),
            (
                "typbyval",
                bools(TYPES.iter().map(|t| (1..=8).contains(&type_len(t)))),
            ),
            ("typtype", strings(same(n, "b"))),
            ("typcategory", strings(TYPES.iter().map(|t| category(t)))),
            ("typisdefined", bools(same(n, true))),
            ("typdelim", strings(same(n, ","))),
            ("typrelid", ints(same(n, 0))),
            ("typelem", ints(same(n, 0))),
            ("typarray", ints(same(n, 0))),
            ("typnotnull", bools(same(n, false))),
            ("typbasetype", ints(same(n, 0))),
            ("typtypmod", ints(same(n, -1))),
            ("typndims", ints(same(n, 0))),
            ("typcollation", ints(same(n, 0))),
            ("typdefault", nulls(n)),
        ])
    }

    fn database(&self) -> Result<RecordBatch> {
        batch(vec![
            ("oid", ints([1])),
            ("datname", strings([DATABASE])),
            ("datdba", ints([OWNER_OID])),
            ("encoding", Arc::new(Int32Array::from(vec![6]))),
            ("datcollate", strings(["C"])),
            ("datctype", strings(["C"])),
            ("datistemplate", bools([false])),
            ("datallowconn", bools([true])),
            ("datconnlimit", ints([-1])),
            ("dattablespace", ints([0])),
            ("datacl", nulls(1)),
        ])
    }

    fn roles(&self, name: &'static str) -> Result<RecordBatch> {
        batch(vec![
            ("oid", ints([OWNER_OID])),
            (name, strings(["eddy"])),
            ("rolsuper", bools([true])),
            ("rolcanlogin", bools([true])),
        ])
    }

    /// `pg_tables`, `pg_views`, `pg_matviews`: one kind's relations.
    fn listing(
        &self,
        kind: RelationKind,
        name: &'static str,
        owner: &'static str,
    ) -> Result<RecordBatch> {
        let names: Vec<&str> = self
            .relations
            .iter()
            .filter(|r| r.kind == kind)
            .map(|r| r.name.as_str())
            .collect();
        let n = names.len();
        batch(vec![
            ("schemaname", strings(same(n, "public"))),
            (name, strings(names)),
            (owner, strings(same(n, "eddy"))),
            ("tablespace", nulls(n)),
            ("hasindexes", bools(same(n, false))),
            ("hasrules", bools(same(n, false))),
            ("hastriggers", bools(same(n, false))),
        ])
    }

    fn settings(&self) -> Result<RecordBatch> {
        let settings = super::PARAMETERS;
        batch(vec![
            ("name", strings(settings.iter().map(|(k, _)| *k))),
            ("setting", strings(settings.iter().map(|(_, v)| *v))),
        ])
    }

    fn information_schema(&self) -> Result<Vec<(&'static str, RecordBatch)>> {
        let n = self.relations.len();
        let table_type = |k: RelationKind| match k {
            RelationKind::Table => "BASE TABLE",
            RelationKind::View | RelationKind::MaterializedView => "VIEW",
        };
        let tables = batch(vec![
            ("table_catalog", strings(same(n, DATABASE))),
            ("table_schema", strings(same(n, "public"))),
            (
                "table_name",
                strings(self.relations.iter().map(|r| &r.name)),
            ),
            (
                "table_type",
                strings(self.relations.iter().map(|r| table_type(r.kind))),
            ),
        ])?;
        let c: Vec<_> = self.columns().collect();
        let m = c.len();
        let data_type =
            |f: &Field| type_name(i64::from(pg_type(f.data_type()).oid())).unwrap_or("text");
        let columns = batch(vec![
            ("table_catalog", strings(same(m, DATABASE))),
            ("table_schema", strings(same(m, "public"))),
            ("table_name", strings(c.iter().map(|c| &c.1.name))),
            ("column_name", strings(c.iter().map(|c| c.3.name()))),
            ("ordinal_position", ints(c.iter().map(|c| c.2 as i64))),
            ("column_default", nulls(m)),
            (
                "is_nullable",
                strings(
                    c.iter()
                        .map(|c| if c.3.is_nullable() { "YES" } else { "NO" }),
                ),
            ),
            ("data_type", strings(c.iter().map(|c| data_type(c.3)))),
            (
                "udt_name",
                strings(
                    c.iter()
                        .map(|c| pg_type(c.3.data_type()).name().to_string()),
                ),
            ),
        ])?;
        let schemata = batch(vec![
            ("catalog_name", strings(same(3, DATABASE))),
            (
                "schema_name",
                strings(["pg_catalog", "public", "information_schema"]),
            ),
            ("schema_owner", strings(same(3, "eddy"))),
        ])?;
        Ok(vec![
            ("tables", tables),
            ("columns", columns),
            ("schemata", schemata),
        ])
    }
}

fn category(t: &Type) -> &'static str {
    match *t {
        Type::BOOL => "B",
        Type::INT2 | Type::INT4 | Type::INT8 | Type::FLOAT4 | Type::FLOAT8 => "N",
        Type::DATE | Type::TIMESTAMP | Type::TIMESTAMPTZ => "D",
        Type::BYTEA => "U",
        _ => "S",
    }
}

/// Rewrites Postgres's spellings that DataFusion does not read:
/// `pg_catalog.f(...)` is `f(...)`, `OPERATOR(pg_catalog.~)` is `~`,
/// `x COLLATE c` is `x`, casts to `regclass`, `oid`, `name` and the like
/// are casts to integers or text, and an unqualified `pg_class` is
/// `pg_catalog.pg_class`.
pub(crate) fn rewrite(statement: &mut ast::Statement) {
    let _ = statement.visit(&mut Rewrite);
}

struct Rewrite;

impl VisitorMut for Rewrite {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut ast::Query) -> ControlFlow<()> {
        if let ast::SetExpr::Select(select) = query.body.as_mut() {
            if reads_nothing(select) {
                answer_nothing(select);
                query.order_by = None;
            }
        } else {
            empty_branches(&mut query.body);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &mut ObjectName) -> ControlFlow<()> {
        if let [ObjectNamePart::Identifier(t)] = relation.0.as_slice()
            && is_table(&t.value.to_lowercase())
        {
            relation
                .0
                .insert(0, ObjectNamePart::Identifier("pg_catalog".into()));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::Function(f) => unqualify(&mut f.name),
            Expr::Collate { expr: inner, .. } => *expr = (**inner).clone(),
            Expr::BinaryOp { op, .. } => {
                if let BinaryOperator::PGCustomBinaryOperator(parts) = op
                    && let Some(standard) = parts.last().and_then(|o| operator(o))
                {
                    *op = standard;
                }
            }
            Expr::Cast { data_type, .. } => {
                if let Some(t) = cast_type(data_type) {
                    *data_type = t;
                }
            }
            Expr::Subquery(query) => aggregate_scalar_subquery(query),
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// A correlated scalar subquery that looks a row up, as catalog queries
/// do (`(SELECT c.collname FROM pg_collation c WHERE c.oid = a.attcollation)`),
/// takes `max` of its one column: the same answer when at most one row
/// matches, which Postgres requires of a scalar subquery anyway, and a
/// form DataFusion plans.
fn aggregate_scalar_subquery(query: &mut ast::Query) {
    let ast::SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    let grouped = !matches!(&select.group_by, ast::GroupByExpr::Expressions(e, _) if e.is_empty());
    if grouped || select.projection.len() != 1 {
        return;
    }
    let (ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. }) =
        &mut select.projection[0]
    else {
        return;
    };
    if matches!(e, Expr::Function(f) if is_aggregate(&f.name)) {
        return;
    }

    let wrapped = format!("max({e})");
    let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
    let parsed = datafusion::sql::sqlparser::parser::Parser::new(&dialect)
        .try_with_sql(&wrapped)
        .and_then(|mut p| p.parse_expr());
    if let Ok(max) = parsed {
        *e = max;
    }
}

/// A query that reads an always empty table, as `SELECT NULL AS c, ...
/// WHERE false`: the same columns and no rows, without the functions and
/// operators Postgres's own catalog queries use on those tables.
fn answer_nothing(select: &mut ast::Select) {
    let names: Vec<String> = select
        .projection
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            ast::SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
            ast::SelectItem::UnnamedExpr(Expr::Identifier(i)) => i.value.clone(),
            ast::SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => {
                parts.last().map_or_else(String::new, |i| i.value.clone())
            }
            _ => format!("column{}", i + 1),
        })
        .collect();
    select.projection = names
        .into_iter()
        .map(|name| ast::SelectItem::ExprWithAlias {
            expr: Expr::value(ast::Value::Null),
            alias: ast::Ident::new(name),
        })
        .collect();
    select.from.clear();
    select.selection = Some(Expr::value(ast::Value::Boolean(false)));
}

/// [`answer_nothing`] for each branch of a UNION that reads nothing.
fn empty_branches(body: &mut ast::SetExpr) {
    match body {
        ast::SetExpr::Select(select) if reads_nothing(select) => answer_nothing(select),
        ast::SetExpr::SetOperation { left, right, .. } => {
            empty_branches(left);
            empty_branches(right);
        }
        _ => {}
    }
}

/// Whether a plain SELECT (no aggregate) reads no rows.
fn reads_nothing(select: &ast::Select) -> bool {
    let plain = matches!(&select.group_by, ast::GroupByExpr::Expressions(e, _) if e.is_empty())
        && select.projection.iter().all(|item| match item {
            ast::SelectItem::UnnamedExpr(e) | ast::SelectItem::ExprWithAlias { expr: e, .. } => {
                !matches!(e, Expr::Function(f) if is_aggregate(&f.name))
            }
            _ => true,
        });
    plain && select.from.iter().any(is_empty_join)
}

fn is_aggregate(name: &ObjectName) -> bool {
    let name = name.to_string().to_lowercase();
    [
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "array_agg",
        "string_agg",
        "bool_and",
        "bool_or",
    ]
    .contains(&name.as_str())
}

/// Whether a FROM item has no rows: it starts from an always empty
/// catalog table and no RIGHT or FULL join brings rows back.
fn is_empty_join(from: &ast::TableWithJoins) -> bool {
    let ast::TableFactor::Table { name, .. } = &from.relation else {
        return false;
    };
    let table = name
        .0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.to_lowercase());
    let outer = from.joins.iter().any(|j| {
        matches!(
            j.join_operator,
            ast::JoinOperator::Right(_)
                | ast::JoinOperator::RightOuter(_)
                | ast::JoinOperator::FullOuter(_)
        )
    });
    table.is_some_and(|t| is_empty_table(&t)) && !outer
}

fn unqualify(name: &mut ObjectName) {
    if let [ObjectNamePart::Identifier(schema), _] = name.0.as_slice()
        && schema.value.eq_ignore_ascii_case("pg_catalog")
    {
        name.0.remove(0);
    }
}

fn operator(op: &str) -> Option<BinaryOperator> {
    Some(match op {
        "~" => BinaryOperator::PGRegexMatch,
        "~*" => BinaryOperator::PGRegexIMatch,
        "!~" => BinaryOperator::PGRegexNotMatch,
        "!~*" => BinaryOperator::PGRegexNotIMatch,
        "=" => BinaryOperator::Eq,
        "<>" => BinaryOperator::NotEq,
        "<" => BinaryOperator::Lt,
        ">" => BinaryOperator::Gt,
        "<=" => BinaryOperator::LtEq,
        ">=" => BinaryOperator::GtEq,
        _ => return None,
    })
}

/// The DataFusion type of a cast to a Postgres-only type.
fn cast_type(t: &ast::DataType) -> Option<ast::DataType> {
    let name = match t {
        ast::DataType::Custom(name, _) => name.0.last()?.as_ident()?.value.to_lowercase(),
        ast::DataType::Regclass => "regclass".to_string(),
        _ => return None,
    };
    Some(match name.as_str() {
        "oid" | "regclass" | "regtype" | "regproc" | "regprocedure" | "regnamespace"
        | "regrole" | "regoper" | "xid" | "int8" => ast::DataType::BigInt(None),
        "int4" => ast::DataType::Int(None),
        "int2" => ast::DataType::SmallInt(None),
        "name" | "char" | "text" | "varchar" | "bpchar" => ast::DataType::Text,
        "bool" => ast::DataType::Boolean,
        _ => return None,
    })
}

/// A `pg_catalog` function: its name, arity and what it returns. Its
/// name tells it apart.
#[derive(Debug)]
struct PgFunction {
    name: &'static str,
    signature: Signature,
    returns: DataType,
    answer: fn(&ScalarFunctionArgs) -> Result<ColumnarValue>,
}

impl PartialEq for PgFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for PgFunction {}

impl std::hash::Hash for PgFunction {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

fn text(v: Option<&str>) -> Result<ColumnarValue> {
    Ok(ColumnarValue::Scalar(ScalarValue::Utf8(
        v.map(str::to_string),
    )))
}

fn boolean(v: bool) -> Result<ColumnarValue> {
    Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(v))))
}

/// `format_type(oid, typmod)`: the type's SQL name.
fn format_type(args: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    let oids = args.args[0].to_array(args.number_rows)?;
    let oids = datafusion::arrow::compute::cast(&oids, &DataType::Int64)?;
    let names: StringArray = as_int64_array(&oids)?
        .iter()
        .map(|oid| oid.map(|o| type_name(o).unwrap_or("unknown")))
        .collect();
    Ok(ColumnarValue::Array(Arc::new(names)))
}

fn version(_: &ScalarFunctionArgs) -> Result<ColumnarValue> {
    text(Some(&format!(
        "PostgreSQL 16.6 (Eddy {}, a streaming SQL engine)",
        env!("CARGO_PKG_VERSION")
    )))
}

fn functions() -> Vec<PgFunction> {
    let any = |arities: &[usize]| {
        let signatures = arities
            .iter()
            .map(|&n| {
                if n == 0 {
                    TypeSignature::Nullary
                } else {
                    TypeSignature::Any(n)
                }
            })
            .collect();
        Signature::one_of(signatures, Volatility::Stable)
    };
    let f = |name, arities: &[usize], returns, answer| PgFunction {
        name,
        signature: any(arities),
        returns,
        answer,
    };
    use DataType::{Boolean, Int32, Utf8};
    vec![
        f("pg_table_is_visible", &[1], Boolean, |_| boolean(true)),
        f("pg_type_is_visible", &[1], Boolean, |_| boolean(true)),
        f("pg_relation_is_publishable", &[1], Boolean, |_| {
            boolean(false)
        }),
        f("pg_is_in_recovery", &[0], Boolean, |_| boolean(false)),
        f("has_table_privilege", &[2, 3], Boolean, |_| boolean(true)),
        f("has_schema_privilege", &[2, 3], Boolean, |_| boolean(true)),
        f("has_database_privilege", &[2, 3], Boolean, |_| {
            boolean(true)
        }),
        f("pg_get_userbyid", &[1], Utf8, |_| text(Some("eddy"))),
        f("pg_encoding_to_char", &[1], Utf8, |_| text(Some("UTF8"))),
        f("format_type", &[2], Utf8, format_type),
        f("pg_get_expr", &[2, 3], Utf8, |_| text(None)),
        f("pg_get_viewdef", &[1, 2], Utf8, |_| text(None)),
        f("pg_get_indexdef", &[1, 2, 3], Utf8, |_| text(None)),
        f("pg_get_constraintdef", &[1, 2], Utf8, |_| text(None)),
        f("obj_description", &[1, 2], Utf8, |_| text(None)),
        f("col_description", &[2], Utf8, |_| text(None)),
        f("shobj_description", &[2], Utf8, |_| text(None)),
        f("current_database", &[0], Utf8, |_| text(Some(DATABASE))),
        f("current_schema", &[0], Utf8, |_| text(Some("public"))),
        f("version", &[0], Utf8, version),
        f("pg_backend_pid", &[0], Int32, |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Int32(Some(
                std::process::id() as i32,
            ))))
        }),
    ]
}

impl ScalarUDFImpl for PgFunction {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.returns.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        (self.answer)(&args)
    }
}
