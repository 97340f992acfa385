//! The function registry: DataFusion's built-in scalar and aggregate
//! functions by name and alias, Flink's functions that DataFusion lacks
//! ([`flink`]), and the scalar functions an embedding program registers
//! ([`Functions::register_scalar`]).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{
    AggregateUDF, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

pub mod flink;

/// Java classes of Flink UDFs that are one of Eddy's functions (registered
/// by the program): `CREATE FUNCTION name AS 'class'` of one of these, under
/// its name, uses Eddy's.
pub const JAVA_CLASSES: &[(&str, &str)] =
    &[("com.github.nexmark.flink.udf.CountChar", "count_char")];

/// The name of the processing-time function.
pub const PROCTIME: &str = "proctime";

/// `PROCTIME()`: the wall-clock time a row is processed at (Flink's
/// processing-time attribute), to the millisecond; one value per batch.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ProcTime {
    signature: Signature,
}

impl ScalarUDFImpl for ProcTime {
    fn name(&self) -> &str {
        PROCTIME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Timestamp(TimeUnit::Millisecond, None))
    }

    fn invoke_with_args(
        &self,
        _args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(
            Some(now),
            None,
        )))
    }
}

#[derive(Debug, Clone)]
pub struct Functions {
    scalars: HashMap<String, Arc<ScalarUDF>>,
    aggregates: HashMap<String, Arc<AggregateUDF>>,
}

impl Default for Functions {
    fn default() -> Self {
        let mut scalars = HashMap::new();
        for f in datafusion::functions::all_default_functions() {
            for name in std::iter::once(f.name()).chain(f.aliases().iter().map(String::as_str)) {
                scalars.insert(name.to_lowercase(), f.clone());
            }
        }
        let proctime = ScalarUDF::new_from_impl(ProcTime {
            signature: Signature::nullary(Volatility::Volatile),
        });
        scalars.insert(PROCTIME.to_string(), Arc::new(proctime));
        // Flink's spelling wins: DataFusion's `date_format` is an alias of
        // `to_char`, with chrono's patterns instead of Java's.
        for f in flink::all() {
            scalars.insert(f.name().to_string(), f);
        }
        let mut aggregates = HashMap::new();
        for f in datafusion::functions_aggregate::all_default_aggregate_functions() {
            for name in std::iter::once(f.name()).chain(f.aliases().iter().map(String::as_str)) {
                aggregates.insert(name.to_lowercase(), f.clone());
            }
        }
        // Flink's names for DataFusion's functions (LISTAGG's default
        // separator is added by the binder).
        for (flink, datafusion) in flink::AGGREGATE_ALIASES {
            if let Some(f) = aggregates.get(*datafusion).cloned() {
                aggregates.insert(flink.to_string(), f);
            }
        }
        Self {
            scalars,
            aggregates,
        }
    }
}

/// Why a function cannot be registered.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error("a function named '{0}' already exists")]
    Exists(String),
}

impl Functions {
    /// Registers a scalar function under its name and aliases (matched
    /// case-insensitively, like every function name). A name that is
    /// already a function, built-in or registered, is refused: a query
    /// must never change meaning because a function was added.
    ///
    /// `Session::register_function` is the same, for a session; the test
    /// `registered_function_plans_and_runs` shows a whole registration.
    pub fn register_scalar(&mut self, udf: ScalarUDF) -> Result<(), FunctionError> {
        let names: Vec<String> = std::iter::once(udf.name())
            .chain(udf.aliases().iter().map(String::as_str))
            .map(str::to_lowercase)
            .collect();
        if let Some(taken) = names
            .iter()
            .find(|n| self.scalars.contains_key(*n) || self.aggregates.contains_key(*n))
        {
            return Err(FunctionError::Exists(taken.clone()));
        }
        let udf = Arc::new(udf);
        for name in names {
            self.scalars.insert(name, udf.clone());
        }
        Ok(())
    }

    pub fn scalar(&self, name: &str) -> Option<Arc<ScalarUDF>> {
        self.scalars.get(&name.to_lowercase()).cloned()
    }

    pub fn aggregate(&self, name: &str) -> Option<Arc<AggregateUDF>> {
        self.aggregates.get(&name.to_lowercase()).cloned()
    }

    /// Every function name, for "did you mean" suggestions.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.scalars
            .keys()
            .chain(self.aggregates.keys())
            .map(String::as_str)
    }
}
